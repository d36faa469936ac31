"""Opt-out signals read from an image's own bytes: C2PA/CAWG training-and-mining assertions and IPTC PLUS
``DataMining`` in XMP.

A rights holder who embeds "do not train" in the file has said so where it travels with the image, so these
signals override whatever a sources spreadsheet claims (docs/consent.md, "Opt-out signals read from the image").
"""

from __future__ import annotations

import importlib
import io
import json
import re
import struct
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from lorahub import errors

OPT_OUT = "opt-out"
ALLOWED = "allowed"
UNSPECIFIED = "unspecified"
EFFECTS = (OPT_OUT, ALLOWED, UNSPECIFIED)
"""What a signal means for training: ``opt-out`` overrides any declared status; the others are recorded only."""

TRAINING_MINING_LABELS = ("cawg.training-mining", "c2pa.training-mining")
"""CAWG 1.x label, and the C2PA 1.4 label it replaced; both still occur in the wild."""

TRAINING_MINING_EFFECT = {"notAllowed": OPT_OUT, "constrained": OPT_OUT, "allowed": ALLOWED}
"""CAWG: "In the absence of additional information, `constrained` shall be treated as equivalent to `notAllowed`"."""

MIME_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}

XMP_START = b"<x:xmpmeta"
XMP_END = b"</x:xmpmeta>"
MAX_XMP_PACKET = 4 * 1024 * 1024
"""Bound on one packet, so a stray start tag in pixel data cannot make the search read the whole file as XML."""
MAX_XMP_PACKETS = 16
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_XMP_KEYWORD = b"XML:com.adobe.xmp"
MAX_INFLATED_XMP = 16 * 1024 * 1024
"""A compressed iTXt chunk is inflated at most this far: a decompression bomb stops here."""

DATA_MINING = re.compile(
    r"""<?[\w.-]+:DataMining(?:\s*=\s*["']([^"']*)["']"""  # attribute form: plus:DataMining="…"
    r"""|[^>]*?\brdf:resource\s*=\s*["']([^"']*)["']"""  # element with rdf:resource
    r"""|\s*>\s*([^<]*?)\s*<)""",  # element with text content
)


@dataclass(frozen=True)
class Signal:
    """One machine-readable statement found in the image: ``kind`` (``c2pa`` or ``xmp``), ``where`` (assertion
    label and entry, or the XMP property), the raw ``value``, its ``effect`` and free ``detail`` (which manifest,
    its validation state)."""

    kind: str
    where: str
    value: str
    effect: str
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "where": self.where,
            "value": self.value,
            "effect": self.effect,
            "detail": self.detail,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signal:
        fields = ("kind", "where", "value", "effect", "detail")
        if set(data) != set(fields) or not all(isinstance(data[f], str) for f in fields):
            raise ValueError(f"a signal has exactly the string fields {', '.join(fields)}")
        if data["effect"] not in EFFECTS:
            raise ValueError(f"signal effect {data['effect']!r} is not one of {', '.join(EFFECTS)}")
        return cls(**{f: data[f] for f in fields})


# --- XMP / IPTC PLUS -------------------------------------------------------------------------------------------


def data_mining_effect(value: str) -> str:
    """PLUS vocabulary: every ``DMI-PROHIBITED…`` variant forbids training a generative model on the image (the
    search-engine exception does not cover it); ``DMI-ALLOWED…`` allows it; anything else says nothing."""
    term = value.rsplit("/", 1)[-1].upper()
    if term.startswith("DMI-PROHIBITED"):
        return OPT_OUT
    if term.startswith("DMI-ALLOWED"):
        return ALLOWED
    return UNSPECIFIED


def xmp_packets(data: bytes) -> Iterator[bytes]:
    """Every XMP packet in the file: a bounded byte search for ``<x:xmpmeta … </x:xmpmeta>`` (JPEG APP1, WebP
    ``XMP `` chunks and uncompressed PNG iTXt all hold the packet verbatim), plus compressed PNG iTXt chunks."""
    yield from _raw_packets(data)
    if data.startswith(PNG_SIGNATURE):
        yield from _compressed_png_packets(data)


def _raw_packets(data: bytes) -> Iterator[bytes]:
    start = data.find(XMP_START)
    found = 0
    while start >= 0 and found < MAX_XMP_PACKETS:
        end = data.find(XMP_END, start, start + MAX_XMP_PACKET)
        if end < 0:
            start = data.find(XMP_START, start + len(XMP_START))
            continue
        found += 1
        yield data[start : end + len(XMP_END)]
        start = data.find(XMP_START, end)


def _compressed_png_packets(data: bytes) -> Iterator[bytes]:
    for kind, body in _png_chunks(data):
        if kind != b"iTXt" or not body.startswith(PNG_XMP_KEYWORD + b"\x00"):
            continue
        rest = body[len(PNG_XMP_KEYWORD) + 1 :]
        if len(rest) < 2 or rest[0] != 1:  # not compressed: the raw search already saw it
            continue
        text = rest[2:].split(b"\x00", 2)[-1]  # skip language tag and translated keyword
        inflater = zlib.decompressobj()
        try:
            yield inflater.decompress(text, MAX_INFLATED_XMP)
        except zlib.error:
            continue


def _png_chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if len(body) < length:
            return
        yield kind, body
        if kind == b"IEND":
            return
        pos += 12 + length


def xmp_signals(data: bytes) -> list[Signal]:
    """The ``plus:DataMining`` values of every XMP packet, each as one signal."""
    signals: list[Signal] = []
    for packet in xmp_packets(data):
        text = packet.decode("utf-8", errors="replace")
        for match in DATA_MINING.finditer(text):
            value = next((g for g in match.groups() if g), "")
            if value:
                signals.append(Signal("xmp", "plus:DataMining", value, data_mining_effect(value)))
    return _unique(signals)


def _unique(signals: list[Signal]) -> list[Signal]:
    """A packet seen both raw and inflated, or twice in one file, counts once."""
    return list(dict.fromkeys(signals))


# --- C2PA / CAWG -----------------------------------------------------------------------------------------------


def load_c2pa() -> ModuleType:
    """Import c2pa-python only when images are actually read, so ``import lorahub`` stays light."""
    try:
        return importlib.import_module("c2pa")  # c2pa-python ships no type information: it stays a ModuleType
    except ImportError as exc:
        raise errors.MissingExtraError("reading C2PA training-and-mining assertions", "c2pa") from exc


def c2pa_version(c2pa: ModuleType) -> str:
    return f"c2pa-python {c2pa.__version__} ({c2pa.sdk_version()})"


def offline_context(c2pa: ModuleType) -> Any:
    """A Reader context that never goes to the network: no remote manifests, no OCSP."""
    return c2pa.Context.from_dict({"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}})


def c2pa_signals(c2pa: ModuleType, context: Any, data: bytes, suffix: str) -> tuple[list[Signal], list[str]]:
    """Training-and-mining entries of every manifest in the image's store (the active one and those of its
    ingredients: an opt-out of the original creator still binds an edit), with notes on what could not be read.
    An opt-out counts even when the signature does not validate: honouring a forged "do not train" costs little,
    ignoring a real one costs a lot."""
    try:
        reader = c2pa.Reader.try_create(MIME_TYPES[suffix], io.BytesIO(data), context=context)
    except c2pa.C2paError as exc:  # damaged, truncated or foreign bytes: every kind is a C2paError subclass
        return [], [f"c2pa: manifest unreadable: {exc}"]
    if reader is None:
        return [], []
    with reader:
        store = json.loads(reader.json())
        state = str(reader.get_validation_state())
    return _store_signals(store, state), []


def _store_signals(store: Mapping[str, Any], state: str) -> list[Signal]:
    active = store.get("active_manifest")
    signals: list[Signal] = []
    for label, manifest in sorted((store.get("manifests") or {}).items()):
        role = "active manifest" if label == active else "ingredient manifest"
        detail = f"{role} {label}, validation {state}" if label == active else f"{role} {label}"
        for assertion in manifest.get("assertions") or []:
            if assertion.get("label") in TRAINING_MINING_LABELS:
                signals.extend(_entry_signals(assertion["label"], assertion.get("data") or {}, detail))
    return signals


def _entry_signals(label: str, data: Mapping[str, Any], detail: str) -> list[Signal]:
    """CAWG 1.1 wraps entries in ``entries``; 1.0 and C2PA 1.4 put them at the top level."""
    entries = data.get("entries", data)
    signals: list[Signal] = []
    for name, entry in sorted(entries.items()) if isinstance(entries, Mapping) else []:
        use = entry.get("use") if isinstance(entry, Mapping) else None
        if isinstance(use, str):
            signals.append(Signal("c2pa", f"{label}/{name}", use, TRAINING_MINING_EFFECT.get(use, UNSPECIFIED), detail))
    return signals

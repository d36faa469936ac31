"""Carrying a signed card with the file: inside its safetensors header, or in a sidecar next to it.

Embedded, the card travels wherever the file goes and can be verified without the registry. It goes into
``__metadata__`` as two strings, ``lorahub.card`` (the exact signed payload) and ``lorahub.signatures`` (the DSSE
signatures as JSON); the payload type is implied. Only the header is rewritten: the data section is copied byte
for byte, so the content digest and AutoV3 stay the same while the full-file SHA-256 changes.

A sidecar ``FILE.lorahub.json`` holds the whole DSSE envelope, for files that must not be modified.
"""

from __future__ import annotations

import json
import os
import stat
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

from lorahub import errors
from lorahub.files.atomic import atomic_write
from lorahub.files.digests import digest_file
from lorahub.files.neighbours import SIDECAR_SUFFIX
from lorahub.files.safetensors import MAX_HEADER_BYTES, METADATA_KEY, Header, check_path, read_header
from lorahub.signing.dsse import Envelope, parse_signatures
from lorahub.signing.signed import CARD_PAYLOAD_TYPE, SignedCard

CARD_KEY = "lorahub.card"
SIGNATURES_KEY = "lorahub.signatures"
COPY_CHUNK = 8 * 1024 * 1024
MAX_SIDECAR_BYTES = 16 * 1024 * 1024
"""A card is a few kilobytes; anything this large is not a sidecar and is not read into memory."""


def embed_card(path: str | os.PathLike[str], signed: SignedCard, *, out: Path | None = None) -> Path:
    """Write the file again (in place, or to ``out``) with the signed card in its header; return the path written.

    Refuses a card whose content digest is not the file's (HashMismatchError): that card would never verify.
    Every other metadata key is kept; a card embedded earlier is replaced. The write is atomic.
    """
    source = check_path(path)
    header = read_header(source)
    _check_content(source, header, signed)
    metadata = {**header.metadata, **embedded_metadata(signed)}
    header_bytes = _encode_header(_raw_entries(source, header), metadata)
    target = Path(out) if out is not None else source
    mode = stat.S_IMODE(source.stat().st_mode)

    def write(dst: BinaryIO) -> None:
        dst.write(struct.pack("<Q", len(header_bytes)))
        dst.write(header_bytes)
        _copy_data_section(source, header, dst)

    atomic_write(target, write, mode=mode)
    return target


def embedded_metadata(signed: SignedCard) -> dict[str, str]:
    """The two ``__metadata__`` entries that carry a signed card."""
    signatures = [s.to_json() for s in signed.envelope.signatures]
    return {
        CARD_KEY: signed.envelope.payload.decode("utf-8"),
        SIGNATURES_KEY: json.dumps(signatures, separators=(",", ":")),
    }


def read_embedded(metadata: Mapping[str, str]) -> SignedCard | None:
    """The signed card in a header's metadata: None when there is none, CardError when it is damaged."""
    card_text, signatures_text = metadata.get(CARD_KEY), metadata.get(SIGNATURES_KEY)
    if card_text is None and signatures_text is None:
        return None
    if card_text is None or signatures_text is None:
        present, missing = (CARD_KEY, SIGNATURES_KEY) if signatures_text is None else (SIGNATURES_KEY, CARD_KEY)
        raise errors.CardError(f"the file's metadata has {present} but no {missing}")
    try:
        payload = card_text.encode("utf-8")
        signatures = json.loads(signatures_text)
    except UnicodeEncodeError:
        raise errors.CardError(f"{CARD_KEY} is not valid Unicode") from None
    except json.JSONDecodeError as exc:
        raise errors.CardError(f"{SIGNATURES_KEY} is not JSON ({exc.msg})") from None
    envelope = Envelope(payload, CARD_PAYLOAD_TYPE, parse_signatures(signatures, SIGNATURES_KEY))
    return SignedCard.from_envelope(envelope)


# --- sidecars --------------------------------------------------------------------------------------------------


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """``x.safetensors`` → ``x.safetensors.lorahub.json``: the full name stays, so ``x.ckpt`` never collides."""
    p = Path(path)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def write_sidecar(path: str | os.PathLike[str], signed: SignedCard) -> Path:
    """Write the DSSE envelope beside the file, atomically, readable like the file itself."""
    target = sidecar_path(path)
    try:
        mode = stat.S_IMODE(Path(path).stat().st_mode) & 0o666
    except OSError:
        mode = 0o644
    data = (json.dumps(signed.envelope.to_json(), indent=2) + "\n").encode("utf-8")
    atomic_write(target, lambda dst: dst.write(data), mode=mode)
    return target


def read_sidecar(path: str | os.PathLike[str]) -> SignedCard | None:
    """The signed card beside ``path``: None when there is no sidecar, CardError when it is damaged."""
    target = sidecar_path(path)
    try:
        with open(target, "rb") as handle:
            data = handle.read(MAX_SIDECAR_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise errors.FileReadError(f"{target}: {exc.strerror}") from None
    if len(data) > MAX_SIDECAR_BYTES:
        raise errors.CardError(f"{target} is larger than {MAX_SIDECAR_BYTES:,} bytes: not a lorahub sidecar")
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise errors.CardError(f"{target} is not UTF-8 JSON") from None
    return SignedCard.from_envelope(Envelope.from_json(document))


# --- rewriting the file ----------------------------------------------------------------------------------------


def _check_content(source: Path, header: Header, signed: SignedCard) -> None:
    actual = digest_file(source, header, check_values=False).hashes.content
    if actual != signed.card.content_digest:
        raise errors.HashMismatchError(
            f"{source}: the card is for content {signed.card.content_digest[:16]}…, the file has {str(actual)[:16]}…",
            hint="Embed the card that was made for this file (`lorahub inspect` shows its content digest).",
        )


def _raw_entries(source: Path, header: Header) -> dict[str, Any]:
    """The header's JSON as written, so tensor entries (and any extra fields in them) are kept exactly."""
    with open(source, "rb") as handle:
        handle.seek(8)
        raw = handle.read(header.header_length)
    document: dict[str, Any] = json.loads(raw.decode("utf-8"))  # read_header has validated these bytes
    document.pop(METADATA_KEY, None)
    return document


def _encode_header(entries: Mapping[str, Any], metadata: Mapping[str, str]) -> bytes:
    """Metadata first, as safetensors writes it; padded with spaces to 8 bytes so the data stays aligned."""
    document = {METADATA_KEY: dict(metadata), **entries}
    encoded = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    if len(encoded) > MAX_HEADER_BYTES:
        raise errors.HeaderTooLargeError(f"the new header would be {len(encoded):,} bytes, over the safetensors limit")
    return encoded


def _copy_data_section(source: Path, header: Header, dst: BinaryIO) -> None:
    """Copy the data section in chunks, exactly ``data_length`` bytes: never more than one chunk in memory."""
    with open(source, "rb") as src:
        src.seek(header.data_start)
        remaining = header.data_length
        while remaining:
            chunk = src.read(min(COPY_CHUNK, remaining))
            if not chunk:
                raise errors.TruncatedFileError(f"{source} became shorter while it was being copied")
            dst.write(chunk)
            remaining -= len(chunk)
        if src.read(1):
            raise errors.InvalidFileError(f"{source} grew while it was being copied; try again")

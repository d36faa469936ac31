"""Signing generated images with C2PA Content Credentials that name the base model and the adapters.

The manifest follows the C2PA 2.2 specification and the C2PA AI/ML guidance (docs/provenance.md, "What is signed"):

* ``c2pa.actions``: one ``c2pa.created`` action, digitalSourceType ``trainedAlgorithmicMedia``, softwareAgent
  lorahub and its version, pointing at the ingredients it used;
* ``org.lorahub.generation``: the base model (name, digest, licence), each adapter (name, version, content
  digest, weight, licence, the fingerprints of its card's signers) and the generation parameters. C2PA does not
  hash model files given as ingredients, so the digests live here, inside the signed claim;
* ``cawg.training-mining`` (CAWG 1.1): may the image be used to train or mine? :data:`DEFAULT_TRAINING_MINING`
  unless the caller chooses;
* one ``inputTo`` ingredient for the base model and one per adapter, without data (model files stay out of the
  image); no thumbnail (it would cost 10-40× the signing time and up to megabytes).

The signature is made by the identity's P-256 key through a callback, so the private key never leaves the
signing package, and the certificate chain comes from the home's CA (:mod:`lorahub.provenance.ca`).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

from lorahub import errors
from lorahub.files.atomic import atomic_write
from lorahub.version import __version__

if TYPE_CHECKING:
    from PIL import Image

TRAINED_ALGORITHMIC_MEDIA: Final = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
GENERATION_LABEL: Final = "org.lorahub.generation"
GENERATION_SCHEMA: Final = "org.lorahub.generation/v1"
TRAINING_MINING_LABEL: Final = "cawg.training-mining"
SOFTWARE_AGENT: Final = "lorahub"

TrainingMiningUse = Literal["allowed", "notAllowed", "constrained"]
TRAINING_MINING_USES: Final = ("allowed", "notAllowed", "constrained")
TRAINING_MINING_KEYS: Final = (
    "cawg.ai_generative_training",
    "cawg.ai_training",
    "cawg.data_mining",
    "cawg.ai_inference",
)
"""The four standard entries of CAWG training-and-data-mining 1.1; other keys must be namespaced (not ``cawg.``)."""

DEFAULT_TRAINING_MINING: Final[Mapping[str, TrainingMiningUse]] = {
    "cawg.ai_generative_training": "notAllowed",
    "cawg.ai_training": "notAllowed",
    "cawg.data_mining": "notAllowed",
    "cawg.ai_inference": "allowed",
}
"""What a lorahub image says unless its maker chooses otherwise: do not train (generative or not) or mine on it;
using it as input to a model (editing, upscaling, captioning) is fine. Conservative because the image's rights
are its maker's to give, and training on generated images is what most makers have not agreed to."""

MIME_TYPES: Final = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
SUFFIXES: Final = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}
_PIL_FORMATS: Final = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
C2PA_EXTRA: Final = "c2pa"

Sign = Callable[[bytes], bytes]


# --- what went into the image ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BaseRef:
    """The base model: a name (a hub id or a folder name), the SHA-256 of its weights (or of the pipeline
    folder's index), its licence identifier, and optionally its family and a URL describing it."""

    name: str
    digest: str | None = None
    license: str | None = None
    family: str | None = None
    uri: str | None = None

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise errors.MissingArgumentError(
                "the base model needs a name", hint="e.g. stabilityai/stable-diffusion-xl-base-1.0"
            )
        if self.digest is not None and not _is_sha256(self.digest):
            raise errors.InvalidArgumentError(
                f"base model {self.name}: the digest {self.digest!r} is not a SHA-256 (64 lowercase hex)",
                hint="Give the SHA-256 of the base's weights file (or of its pipeline folder's index), or none.",
            )

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "digest": self.digest, "license": self.license, "family": self.family} | (
            {"uri": self.uri} if self.uri else {}
        )


@dataclass(frozen=True)
class AdapterUse:
    """One adapter as applied: who it is (name, version, content digest, file SHA-256), how strongly (weight),
    under which licence, and which keys signed its card (fingerprints). ``consent`` is its dataset consent."""

    name: str
    content_digest: str
    weight: float = 1.0
    version: int | None = None
    license: str | None = None
    signers: tuple[str, ...] = ()
    sha256: str | None = None
    consent: str | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.weight):
            raise errors.InvalidArgumentError(
                f"adapter {self.name}: the weight {self.weight} is not a finite number", hint="For example 0.8."
            )
        if not _is_sha256(self.content_digest):
            raise errors.InvalidArgumentError(
                f"adapter {self.name}: the content digest is not 64 lowercase hex",
                hint="Give the adapter's content_digest as `lorahub show NAME --json` lists it.",
            )
        object.__setattr__(self, "signers", tuple(self.signers))

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}" if self.version is not None else self.name

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "content_digest": self.content_digest,
            "sha256": self.sha256,
            "weight": self.weight,
            "license": self.license,
            "consent": self.consent,
            "signers": list(self.signers),
        }


@dataclass(frozen=True)
class TrainingMiningEntry:
    """One AI training-and-mining permission of a signed image (:meth:`Hub.sign_image`): ``allowed``,
    ``notAllowed``, or ``constrained`` with ``constraint_info`` saying how."""

    use: TrainingMiningUse
    constraint_info: str | None = None

    def to_dict(self) -> dict[str, str]:
        return {"use": self.use} | ({"constraint_info": self.constraint_info} if self.constraint_info else {})


@dataclass(frozen=True)
class GenerationParameters:
    """How the image was made. ``extra`` holds anything else worth recording (guidance scale, size, …); values
    must be JSON-like."""

    prompt: str | None = None
    negative_prompt: str | None = None
    seed: int | None = None
    steps: int | None = None
    scheduler: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        fixed = {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "seed": self.seed,
            "steps": self.steps,
            "scheduler": self.scheduler,
        }
        return {k: v for k, v in fixed.items() if v is not None} | dict(self.extra)


# --- who signs ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class C2paCredentials:
    """What signing needs: the certificate chain (PEM, leaf first), a callable that signs bytes with the leaf's
    key (DER ECDSA P-256 / SHA-256), and optionally a timestamp-authority URL. Reusable across images."""

    chain_pem: str
    sign: Sign
    tsa_url: str | None = None
    key_fingerprint: str | None = None


class CredentialSource(Protocol):
    """Anything that can hand out credentials for an identity (``None``: the default one): a Hub."""

    def c2pa_credentials(self, key: str | None = None) -> C2paCredentials: ...


@dataclass(frozen=True)
class SignedImage:
    """The signed image: its bytes, format (``png``/``jpeg``/``webp``), the manifest definition it carries and,
    when written, its path."""

    data: bytes
    format: str
    manifest: dict[str, Any]
    path: Path | None = None

    @cached_property
    def sha256(self) -> str:
        """Computed on first use: hashing a large PNG costs about as much as signing it."""
        return hashlib.sha256(self.data).hexdigest()

    @property
    def mime_type(self) -> str:
        return MIME_TYPES[self.format]


# --- signing -----------------------------------------------------------------------------------------------------


def sign_image(
    image_or_path: Image.Image | str | os.PathLike[str] | bytes,
    *,
    base: BaseRef,
    adapters: Sequence[AdapterUse],
    prompt: str | None = None,
    negative_prompt: str | None = None,
    seed: int | None = None,
    steps: int | None = None,
    scheduler: str | None = None,
    signer: C2paCredentials | str | None = None,
    out: str | os.PathLike[str] | None = None,
    hub: CredentialSource | None = None,
    training_mining: Mapping[str, str | TrainingMiningEntry] | None = None,
    parameters: Mapping[str, Any] | None = None,
    replace: bool = False,
    thumbnail: bool = False,
) -> SignedImage:
    """Sign an image (a PIL image, a PNG/JPEG/WebP path, or its bytes) with a manifest naming ``base`` and
    ``adapters``; write it to ``out`` when given (atomically) and return it.

    ``signer`` is a :class:`C2paCredentials`, or an identity reference that ``hub`` resolves (None: the hub's
    default identity). A PIL image is encoded as ``out``'s format (PNG when there is no ``out``).
    ``training_mining`` maps entry names (``ai_training`` or ``cawg.ai_training``, …) to ``allowed`` /
    ``notAllowed`` / ``constrained`` (or a :class:`TrainingMiningEntry`); unnamed standard entries keep
    :data:`DEFAULT_TRAINING_MINING`. An image that already carries Content Credentials is refused unless
    ``replace``: the new manifest would claim the image was created here and drop the old one. ``thumbnail``
    embeds a 256-px JPEG thumbnail (off by default: it costs several times the signing).
    """
    credentials = _credentials(signer, hub)
    out_path = Path(out) if out is not None else None
    data, kind = image_bytes(image_or_path, _format_of_path(out_path) if out_path else None)
    if out_path is not None and _format_of_path(out_path) != kind:
        raise errors.ImageFormatError(
            f"the image is {kind.upper()} but {out_path.name} names another format",
            hint=f"Give --out a {kind} suffix ({', '.join(s for s, k in SUFFIXES.items() if k == kind)}).",
        )
    if not replace and carries_manifest(data, kind):
        raise errors.ContentCredentialsPresentError(f"{_describe(image_or_path)} already carries Content Credentials")
    params = GenerationParameters(prompt, negative_prompt, seed, steps, scheduler, dict(parameters or {}))
    manifest = build_manifest(
        base=base,
        adapters=adapters,
        parameters=params,
        training_mining=training_mining_entries(training_mining),
        kind=kind,
        title=out_path.name if out_path else f"lorahub-image.{kind}",
    )
    signed = sign_bytes(data, kind, manifest, credentials, thumbnail=thumbnail)
    if out_path is not None:
        atomic_write(out_path, [signed], mode=0o644)
    return SignedImage(signed, kind, manifest, out_path)


def build_manifest(
    *,
    base: BaseRef,
    adapters: Sequence[AdapterUse],
    parameters: GenerationParameters,
    training_mining: Mapping[str, TrainingMiningEntry],
    kind: str,
    title: str,
) -> dict[str, Any]:
    """The manifest definition handed to ``c2pa.Builder`` (c2pa-rs serde names; see the module docstring)."""
    labels = ["base_model"] + [f"adapter_{i}" for i in range(len(adapters))]
    count = f"{len(adapters)} LoRA adapter{'s' if len(adapters) != 1 else ''}"
    action = {
        "action": "c2pa.created",
        "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
        "softwareAgent": {"name": SOFTWARE_AGENT, "version": __version__},
        "parameters": {"ingredientIds": labels},
        "description": f"generated from {base.name} with {count}",
    }
    generation = {
        "schema": GENERATION_SCHEMA,
        "base": base.to_dict(),
        "adapters": [adapter.to_dict() for adapter in adapters],
        "parameters": parameters.to_dict(),
    }
    return {
        "claim_generator_info": [{"name": SOFTWARE_AGENT, "version": __version__}],
        "title": title,
        "format": MIME_TYPES[kind],
        "assertions": [
            {"label": "c2pa.actions", "data": {"actions": [action]}},
            {"label": GENERATION_LABEL, "data": generation},
            {
                "label": TRAINING_MINING_LABEL,
                "data": {"entries": {key: entry.to_dict() for key, entry in training_mining.items()}},
            },
        ],
        "ingredients": [_base_ingredient(base)]
        + [_adapter_ingredient(adapter, f"adapter_{i}") for i, adapter in enumerate(adapters)],
    }


def _base_ingredient(base: BaseRef) -> dict[str, Any]:
    ingredient: dict[str, Any] = {
        "title": base.name,
        "format": "application/octet-stream",
        "relationship": "inputTo",
        "label": "base_model",
        "data_types": [{"type": "c2pa.types.generator"}, {"type": "c2pa.types.model"}],
        "description": f"base model {base.name}",
    }
    if base.uri:
        ingredient["informational_URI"] = base.uri
    if base.digest:
        ingredient["metadata"] = {"org.lorahub.sha256": base.digest}
    return ingredient


def _adapter_ingredient(adapter: AdapterUse, label: str) -> dict[str, Any]:
    return {
        "title": adapter.ref,
        "format": "application/octet-stream",
        "relationship": "inputTo",
        "label": label,
        "data_types": [{"type": "c2pa.types.model"}, {"type": "org.lorahub.types.lora"}],
        "description": f"LoRA adapter {adapter.ref} applied with weight {adapter.weight:g}",
        "metadata": {"org.lorahub.content_digest": adapter.content_digest, "org.lorahub.weight": adapter.weight},
    }


def training_mining_entries(
    choices: Mapping[str, str | TrainingMiningEntry] | None,
) -> dict[str, TrainingMiningEntry]:
    """The default entries updated with ``choices``; short names get the ``cawg.`` prefix."""
    entries = {key: TrainingMiningEntry(use) for key, use in DEFAULT_TRAINING_MINING.items()}
    for name, choice in (choices or {}).items():
        key = name if "." in name else f"cawg.{name}"
        if key.startswith("cawg.") and key not in TRAINING_MINING_KEYS:
            raise errors.UnknownChoiceError(
                f"{name!r} is not a CAWG training-and-data-mining entry",
                hint=f"Use one of {', '.join(k.removeprefix('cawg.') for k in TRAINING_MINING_KEYS)}, or a "
                "namespaced key of your own (e.g. com.example.use).",
            )
        entry = choice if isinstance(choice, TrainingMiningEntry) else TrainingMiningEntry(choice)  # type: ignore[arg-type]
        if entry.use not in TRAINING_MINING_USES:
            raise errors.UnknownChoiceError(
                f"{name}: {entry.use!r} is not a training-and-data-mining choice",
                hint="Use allowed, notAllowed or constrained.",
            )
        entries[key] = entry
    return entries


def sign_bytes(
    data: bytes, kind: str, manifest: Mapping[str, Any], credentials: C2paCredentials, *, thumbnail: bool = False
) -> bytes:
    """Embed and sign ``manifest`` in the image bytes with one ``c2pa.Builder`` (single use); no thumbnail, or
    with ``thumbnail`` a small JPEG one."""
    c2pa = c2pa_module()
    try:
        signer = c2pa.Signer.from_callback(
            credentials.sign, c2pa.C2paSigningAlg.ES256, credentials.chain_pem, credentials.tsa_url
        )
        context = c2pa.Context.from_dict(THUMBNAIL_SETTINGS if thumbnail else SIGN_SETTINGS)
        destination = io.BytesIO()
        with c2pa.Builder(dict(manifest), context=context) as builder:
            builder.sign(signer, MIME_TYPES[kind], io.BytesIO(data), destination)
    except c2pa.C2paError as exc:
        raise _signing_error(exc) from None
    return destination.getvalue()


SIGN_SETTINGS: Final = {"builder": {"thumbnail": {"enabled": False}}}
"""No thumbnail; verify-after-sign stays on (a manifest the SDK would reject is refused at signing)."""
THUMBNAIL_SETTINGS: Final = {"builder": {"thumbnail": {"enabled": True, "format": "jpeg", "long_edge": 256}}}
"""A 256-px JPEG thumbnail (tens of kB; the library's default is a 1024-px one in the image's own format, up to
megabytes for WebP)."""


def _signing_error(exc: Exception) -> errors.LorahubError:
    message = str(exc)
    if "not valid at time of signing" in message or "expired" in message:
        return errors.CertificateExpiredError(f"cannot sign: {message}")
    if "certificate" in message:
        return errors.CertificateInvalidError(f"the C2PA library refused the signing certificate: {message}")
    if "http resolver" in message or "timestamp" in message.lower():
        return errors.C2paFailedError(
            f"the timestamp authority could not be reached: {message}",
            hint="Check the network, or remove the URL: lorahub provenance settings --no-tsa-url.",
        )
    return errors.C2paFailedError(f"C2PA signing failed: {message}")


def _credentials(signer: C2paCredentials | str | None, hub: CredentialSource | None) -> C2paCredentials:
    if isinstance(signer, C2paCredentials):
        return signer
    if hub is None:
        raise errors.MissingArgumentError(
            "sign_image needs credentials: pass signer=C2paCredentials(...) or hub=Hub.open()",
            hint="Hub.c2pa_credentials() gives an identity's credentials; Hub.sign_image does both.",
        )
    return hub.c2pa_credentials(signer)


# --- images ------------------------------------------------------------------------------------------------------


def sniff_format(data: bytes) -> str | None:
    """``png``, ``jpeg`` or ``webp`` from the first bytes, else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def carries_manifest(data: bytes, kind: str) -> bool:
    """Whether the image holds a C2PA manifest store, found by walking its container (PNG chunks, JPEG segments
    up to the scan, RIFF chunks): microseconds, no validation. Where c2pa-rs puts it: a PNG ``caBX`` chunk, JPEG
    APP11 JUMBF segments labelled ``c2pa``, a WebP ``C2PA`` chunk."""
    try:
        if kind == "png":
            return any(tag == b"caBX" for tag, _ in _png_chunks(data))
        if kind == "jpeg":
            return any(marker == 0xEB and b"c2pa" in body for marker, body in _jpeg_segments(data))
        return any(tag == b"C2PA" for tag in _riff_chunks(data))
    except (struct.error, IndexError):
        return False  # a container this walk cannot follow: the C2PA library will judge it


def _png_chunks(data: bytes) -> Iterator[tuple[bytes, int]]:
    offset = 8
    while offset + 8 <= len(data):
        length, tag = struct.unpack_from(">I4s", data, offset)
        yield tag, length
        if tag == b"IEND":
            return
        offset += 12 + length


def _jpeg_segments(data: bytes) -> Iterator[tuple[int, bytes]]:
    offset = 2
    while offset + 4 <= len(data) and data[offset] == 0xFF:
        marker = data[offset + 1]
        if marker == 0xDA:  # start of scan: metadata segments come before it
            return
        (length,) = struct.unpack_from(">H", data, offset + 2)
        yield marker, data[offset + 4 : offset + 2 + length]
        offset += 2 + length


def _riff_chunks(data: bytes) -> Iterator[bytes]:
    offset = 12
    while offset + 8 <= len(data):
        tag = data[offset : offset + 4]
        (length,) = struct.unpack_from("<I", data, offset + 4)
        yield tag
        offset += 8 + length + (length & 1)


def _describe(source: object) -> str:
    return "the image" if isinstance(source, bytes) or not isinstance(source, (str, os.PathLike)) else str(source)


def image_bytes(source: Image.Image | str | os.PathLike[str] | bytes, wanted: str | None = None) -> tuple[bytes, str]:
    """The image's encoded bytes and format. Files and bytes are used as they are (their format sniffed, not
    guessed from a suffix); a PIL image is encoded as ``wanted`` (PNG by default)."""
    if isinstance(source, bytes):
        return source, _require_format(source, "the image bytes")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise errors.PathNotFoundError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise errors.NotAFileError(f"{path} is a directory", hint="Give the path of one image.") from None
        except OSError as exc:
            raise errors.FileReadError(f"{path}: {exc.strerror}") from None
        return data, _require_format(data, str(path))
    return _encode(source, wanted or "png"), wanted or "png"


def _encode(image: Image.Image, kind: str) -> bytes:
    buffer = io.BytesIO()
    if kind == "jpeg" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    options: dict[str, Any] = {"quality": 95} if kind in ("jpeg", "webp") else {}
    image.save(buffer, _PIL_FORMATS[kind], **options)
    return buffer.getvalue()


def _require_format(data: bytes, where: str) -> str:
    kind = sniff_format(data)
    if kind is None:
        raise errors.ImageFormatError(f"{where} is not a PNG, JPEG or WebP image")
    return kind


def _format_of_path(path: Path) -> str:
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise errors.ImageFormatError(f"{path.name}: lorahub writes .png, .jpg/.jpeg and .webp images")
    return kind


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def c2pa_module() -> ModuleType:
    """The c2pa-python module, imported on first use (it loads a native library)."""
    try:
        import c2pa
    except ImportError:
        raise errors.MissingExtraError("C2PA Content Credentials", C2PA_EXTRA) from None
    module: ModuleType = c2pa
    return module

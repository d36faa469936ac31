"""OpenSSF model signing (sigstore ``model-transparency``) bundles for one model file, made and checked here.

The format, as ``model_signing`` 1.x writes and reads it for a key-signed model:

- a sigstore bundle (JSON, media type ``application/vnd.dev.sigstore.bundle.v0.3+json``) whose verification
  material is a bare public-key hint (the hex SHA-256 of the signer's SubjectPublicKeyInfo PEM), with no
  transparency-log entries, and whose content is a DSSE envelope;
- the envelope carries an in-toto Statement v1 (payload type ``application/vnd.in-toto+json``), signed with ECDSA
  over the DSSE PAE (SHA-256 for a P-256 key), as lorahub signs its cards;
- the statement's predicate (type ``https://model_signing/signature/v1.0``) lists every hashed file of the model as
  a resource (name relative to the model path, algorithm, hex digest) and says how they were hashed
  (``serialization``: method ``files``, ``hash_type``, ``allow_symlinks``, optionally ``ignore_paths``);
- the one subject names the model (informative only) and carries the *root digest*: the SHA-256 of the resources'
  raw digests concatenated in the listed order, so that a verifier can refuse a resource list edited after the
  fact even before it hashes anything.

A model that is a single file is hashed relative to itself, so its one resource is named ``.``; that is what
``model_signing sign key FILE`` writes and what ``model_signing verify key FILE`` recomputes. lorahub writes that
form, so its bundles verify with ``model_signing`` under any file name, and reads it back. It also reads a bundle of
a folder that held only this file (one resource, named as the file), since such a bundle vouches for exactly the
same bytes. A bundle of a folder with several files is not checked against one of them: its signer vouched for the
folder as a whole, and ``model_signing verify`` on that folder is the check that answers for it.

Refused with a hint rather than half-checked: bundles whose signer is proven by a certificate (sigstore keyless,
``model_signing sign certificate``), sharded serialisation, the pre-1.0 predicate, and hash types other than
SHA-256, BLAKE2b and BLAKE3. Only P-256 keys verify here, as everywhere in lorahub (decision 4).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import blake3
import rfc8785

from lorahub import errors
from lorahub.files.digests import digest_file
from lorahub.files.safetensors import check_path
from lorahub.signing.dsse import Envelope, EnvelopeSignature, pae, verify_envelope
from lorahub.signing.keys import Signer, public_key_from_pem, public_pem_of

BUNDLE_MEDIA_TYPE: Final = "application/vnd.dev.sigstore.bundle.v0.3+json"
IN_TOTO_PAYLOAD_TYPE: Final = "application/vnd.in-toto+json"
STATEMENT_TYPE: Final = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE: Final = "https://model_signing/signature/v1.0"
LEGACY_PREDICATE_TYPE: Final = "https://model_signing/Digests/v0.1"
SINGLE_FILE_RESOURCE: Final = "."
"""The resource name of a model that is one file: its path relative to itself."""
HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class _Hasher(Protocol):
    def update(self, data: memoryview, /) -> object: ...

    def hexdigest(self) -> str: ...


HASH_TYPES: Mapping[str, Callable[[], _Hasher]] = {
    "sha256": hashlib.sha256,
    "blake2b": hashlib.blake2b,
    "blake3": blake3.blake3,
}
"""The ``hash_type`` values model_signing writes, and the hasher that recomputes each (BLAKE2b at its default
64-byte digest, as model_signing uses it)."""

_CERTIFICATE_HINT = (
    "lorahub checks bundles signed with a key (`model_signing sign key`). A bundle that proves its signer with a "
    "certificate (Sigstore keyless, `model_signing sign certificate`) is checked by `model_signing verify sigstore` "
    "or `model_signing verify certificate`."
)
_FORMAT_HINT = (
    "Give the signature file `model_signing sign key` or `lorahub sign --oms` wrote, as it was written; "
    "re-sign the model if it was edited."
)


# --- making a bundle -------------------------------------------------------------------------------------------


def oms_bundle(path: Path, signer: Signer, *, name: str | None = None) -> bytes:
    """The bundle (JSON bytes) that signs the file at ``path`` as a single-file model, as ``model_signing sign key
    FILE`` would: ``model_signing verify key FILE --signature … --public_key …`` accepts it under any file name.

    ``name`` is the model name the subject records (informative: verifiers do not compare it); default: the
    file's name, which a content-addressed copy (a blob store's) lacks. The file is read once, in chunks, so
    memory does not grow with its size.
    """
    sha256 = digest_file(path, identity_only=True).hashes.sha256
    return oms_bundle_for_digest(sha256, signer, name=name if name is not None else Path(path).name)


def oms_bundle_for_digest(sha256: str, signer: Signer, *, name: str) -> bytes:
    """The same bundle from a SHA-256 the caller has already computed (a file just hashed or verified need not be
    read again). ``name`` is the model name recorded in the subject."""
    if not SHA256_HEX.fullmatch(sha256):
        raise errors.InvalidArgumentError(f"{sha256!r} is not a SHA-256 (64 lowercase hex)")
    resources = [{"name": SINGLE_FILE_RESOURCE, "algorithm": "sha256", "digest": sha256}]
    statement: dict[str, Any] = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": root_digest([bytes.fromhex(sha256)])}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": False},
            "resources": resources,
        },
    }
    payload = bytes(rfc8785.dumps(statement))
    signature = EnvelopeSignature("", signer.sign(pae(IN_TOTO_PAYLOAD_TYPE, payload)))  # no keyid, as model_signing
    envelope = Envelope(payload, IN_TOTO_PAYLOAD_TYPE, (signature,))
    bundle = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": key_hint(signer.identity.public_pem)}, "tlogEntries": []},
        "dsseEnvelope": envelope.to_json(),
    }
    return (json.dumps(bundle, separators=(",", ":")) + "\n").encode("ascii")


def root_digest(digests: list[bytes]) -> str:
    """The subject's digest: SHA-256 over the resources' raw digests, concatenated in their listed order."""
    return hashlib.sha256(b"".join(digests)).hexdigest()


def key_hint(public_pem: str) -> str:
    """The key hint a model-signing bundle carries: hex SHA-256 of the key's SubjectPublicKeyInfo PEM text (not of
    its DER, which is lorahub's fingerprint). Re-encoded first, so any PEM spelling of a key gives one hint."""
    key, _ = public_key_from_pem(public_pem)
    return hashlib.sha256(public_pem_of(key).encode("ascii")).hexdigest()


# --- checking a bundle -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileDigest:
    """One resource of a bundle compared with the file: ``expected`` as signed, ``actual`` as read (hex)."""

    name: str
    algorithm: str
    expected: str
    actual: str

    @property
    def matches(self) -> bool:
        return self.expected == self.actual


@dataclass(frozen=True)
class OmsCheck:
    """What :func:`verify_oms_bundle` found. ``ok`` only when a given key verifies the signature and the file is
    the one the bundle signs. ``signer`` is the fingerprint of the key that verified the signature (None when none
    did); ``digests`` the file digests compared (empty when the signature did not verify: an unauthenticated
    resource list is not worth reading the file for)."""

    ok: bool
    signer: str | None
    reason: str
    digests: tuple[FileDigest, ...] = ()
    model_name: str | None = None
    key_hint: str | None = None

    @property
    def signature_valid(self) -> bool:
        return self.signer is not None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "signer": self.signer,
            "reason": self.reason,
            "model_name": self.model_name,
            "key_hint": self.key_hint,
            "digests": [
                {"name": d.name, "algorithm": d.algorithm, "expected": d.expected, "actual": d.actual, "ok": d.matches}
                for d in self.digests
            ],
        }


@dataclass(frozen=True)
class Statement:
    """The parts of a model-signing statement a single-file check uses."""

    model_name: str
    hash_type: str
    resources: tuple[tuple[str, str, str], ...]
    """(name, algorithm, lowercase hex digest), in the listed order."""


def verify_oms_bundle(path: Path, bundle: bytes, keys: Mapping[str, str], *, resource: str | None = None) -> OmsCheck:
    """Check that one of ``keys`` (fingerprint → public PEM) signed ``bundle`` and that it signs the file at
    ``path``. A failed check is an answer (``ok`` False, with the reason); a bundle that is not a key-signed
    model-signing bundle raises :class:`~lorahub.errors.OmsBundleError` or
    :class:`~lorahub.errors.OmsBundleUnsupportedError`.

    The file must be the bundle's only resource, named ``.`` (a single-file model) or as the file (a folder
    holding just that file); ``resource`` names it otherwise (the name the file had when a folder was signed).
    """
    path = check_path(path)
    envelope, hint = read_bundle(bundle)
    valid = [check for check in verify_envelope(envelope, keys) if check.valid]
    if not valid:
        named = f" (the bundle names the key whose public PEM has SHA-256 {hint[:16]}…)" if hint else ""
        reason = (
            f"none of the {len(keys)} key(s) given verifies the bundle's signature{named}: another key signed it, "
            "or the bundle was edited"
            if keys
            else "no public key to check the signature with"
        )
        return OmsCheck(False, None, reason, key_hint=hint)
    signer = valid[0].keyid
    statement = parse_statement(envelope.payload)
    expected = _resource_for(statement, path, resource)
    if isinstance(expected, str):
        return OmsCheck(False, signer, expected, model_name=statement.model_name, key_hint=hint)
    name, algorithm, digest = expected
    actual = file_digest(path, algorithm)
    found = FileDigest(name, algorithm, digest, actual)
    reason = (
        f"the file's {algorithm} is the one the bundle signs ({actual[:16]}…)"
        if found.matches
        else f"the file changed: its {algorithm} is {actual[:16]}…, the bundle signs {digest[:16]}…"
    )
    return OmsCheck(found.matches, signer, reason, (found,), statement.model_name, hint)


def file_digest(path: Path, algorithm: str) -> str:
    """The hex digest of a whole file under one of :data:`HASH_TYPES`, read once in chunks."""
    if algorithm == "sha256":
        return digest_file(path, identity_only=True).hashes.sha256
    hasher = HASH_TYPES[algorithm]()
    digest_file(path, identity_only=True, sink=hasher.update)
    return hasher.hexdigest()


def _resource_for(statement: Statement, path: Path, resource: str | None) -> tuple[str, str, str] | str:
    """The resource that stands for the file, or why none does."""
    accepted = {SINGLE_FILE_RESOURCE, path.name} | ({resource} if resource else set())
    names = [r[0] for r in statement.resources]
    if len(names) == 1 and names[0] in accepted:
        return statement.resources[0]
    if len(names) == 1:
        return (
            f"the bundle signs a file named {names[0]!r}, not {path.name!r}: give the file its signed name, or name "
            "the resource it stands for"
        )
    listed = ", ".join(repr(n) for n in names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return (
        f"the bundle signs a folder of {len(names)} files ({listed}), not this one file: check the folder with "
        "`model_signing verify key FOLDER`"
    )


# --- reading -------------------------------------------------------------------------------------------------


def read_bundle(data: bytes) -> tuple[Envelope, str | None]:
    """The DSSE envelope of a key-signed bundle and its key hint, read strictly: fields a sigstore bundle does not
    define are refused, as sigstore's own readers refuse them."""
    bundle = _json_object(data, "the bundle")
    _no_unknown(bundle, {"mediaType", "verificationMaterial", "dsseEnvelope", "messageSignature"}, "the bundle")
    media_type = bundle.get("mediaType")
    if media_type != BUNDLE_MEDIA_TYPE:
        raise errors.OmsBundleError(
            f"the bundle's mediaType is {media_type!r}, not {BUNDLE_MEDIA_TYPE!r}: not a model-signing bundle",
            hint=_FORMAT_HINT,
        )
    hint = _verification_key_hint(bundle.get("verificationMaterial"))
    if "messageSignature" in bundle or "dsseEnvelope" not in bundle:
        raise errors.OmsBundleUnsupportedError(
            "the bundle signs a message digest, not a DSSE statement: it is a sigstore bundle, but not a model "
            "signature",
            hint="Sign the model with `model_signing sign key` or `lorahub sign --oms`.",
        )
    try:
        envelope = Envelope.from_json(bundle["dsseEnvelope"])
    except errors.CardError as error:
        raise errors.OmsBundleError(f"the bundle's DSSE envelope: {error.message}", hint=_FORMAT_HINT) from None
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise errors.OmsBundleError(
            f"the envelope carries {envelope.payload_type!r}, not an in-toto statement ({IN_TOTO_PAYLOAD_TYPE})",
            hint=_FORMAT_HINT,
        )
    if not envelope.signatures:
        raise errors.OmsBundleError("the envelope has no signature", hint=_FORMAT_HINT)
    return envelope, hint


def _verification_key_hint(material: Any) -> str | None:
    """The public-key hint, after refusing material that proves the signer some other way (a certificate)."""
    where = "the bundle's verificationMaterial"
    if not isinstance(material, dict):
        raise errors.OmsBundleError(f"{where} is missing or not an object", hint=_FORMAT_HINT)
    known = {"publicKey", "x509CertificateChain", "certificate", "tlogEntries", "timestampVerificationData"}
    _no_unknown(material, known, where)
    if "certificate" in material or "x509CertificateChain" in material:
        raise errors.OmsBundleUnsupportedError(
            "the bundle proves its signer with a certificate, not a public key", hint=_CERTIFICATE_HINT
        )
    key = material.get("publicKey")
    if not isinstance(key, dict):
        raise errors.OmsBundleError(f"{where} names no public key", hint=_FORMAT_HINT)
    _no_unknown(key, {"hint", "rawBytes", "keyDetails"}, f"{where}.publicKey")
    hint = key.get("hint")
    if hint is not None and not isinstance(hint, str):
        raise errors.OmsBundleError(f"{where}.publicKey.hint is not a string", hint=_FORMAT_HINT)
    return hint or None


def parse_statement(payload: bytes) -> Statement:
    """The in-toto statement of a model signature, with its root digest checked against its resources."""
    statement = _json_object(payload, "the signed statement")
    if statement.get("_type") != STATEMENT_TYPE:
        raise errors.OmsBundleError(
            f"the signed statement's _type is {statement.get('_type')!r}, not {STATEMENT_TYPE!r}", hint=_FORMAT_HINT
        )
    predicate_type = statement.get("predicateType")
    if predicate_type == LEGACY_PREDICATE_TYPE:
        raise errors.OmsBundleUnsupportedError(
            f"the statement uses the pre-1.0 predicate {LEGACY_PREDICATE_TYPE}",
            hint="Sign the model again with model_signing 1.0 or later (or `lorahub sign --oms`).",
        )
    if predicate_type != PREDICATE_TYPE:
        raise errors.OmsBundleError(
            f"the statement's predicateType is {predicate_type!r}, not a model signature ({PREDICATE_TYPE})",
            hint=_FORMAT_HINT,
        )
    name, subject_digest = _subject(statement.get("subject"))
    predicate = statement.get("predicate")
    if not isinstance(predicate, dict):
        raise errors.OmsBundleError("the statement has no predicate object", hint=_FORMAT_HINT)
    hash_type = _hash_type(predicate.get("serialization"))
    resources = _resources(predicate.get("resources"), hash_type)
    computed = root_digest([bytes.fromhex(digest) for _, _, digest in resources])
    if computed != subject_digest:
        raise errors.OmsBundleError(
            f"the statement is inconsistent: its subject digest is {subject_digest[:16]}…, its resources hash to "
            f"{computed[:16]}…",
            hint=_FORMAT_HINT,
        )
    return Statement(name, hash_type, resources)


def _subject(subjects: Any) -> tuple[str, str]:
    if not isinstance(subjects, list) or len(subjects) != 1 or not isinstance(subjects[0], dict):
        raise errors.OmsBundleError("the statement must have exactly one subject (the model)", hint=_FORMAT_HINT)
    subject = subjects[0]
    name, digest = subject.get("name"), subject.get("digest")
    if not isinstance(name, str) or not isinstance(digest, dict) or not isinstance(digest.get("sha256"), str):
        raise errors.OmsBundleError("the statement's subject needs a name and a sha256 digest", hint=_FORMAT_HINT)
    return name, _hex_bytes(digest["sha256"], "the subject's sha256").hex()


def _hash_type(serialization: Any) -> str:
    where = "the statement's serialization"
    if not isinstance(serialization, dict):
        raise errors.OmsBundleError(f"{where} is missing", hint=_FORMAT_HINT)
    method = serialization.get("method")
    if method == "shards":
        raise errors.OmsBundleUnsupportedError(
            "the model was hashed in shards (serialization method 'shards'); lorahub checks whole-file digests",
            hint="Check it with `model_signing verify key`, or sign the file whole (the CLI's default).",
        )
    if method != "files":
        raise errors.OmsBundleError(f"{where} method is {method!r}, not 'files'", hint=_FORMAT_HINT)
    hash_type = serialization.get("hash_type")
    if hash_type not in HASH_TYPES:
        raise errors.OmsBundleUnsupportedError(
            f"{where} names hash type {hash_type!r}",
            hint=f"lorahub recomputes {', '.join(HASH_TYPES)}; sign with one of them.",
        )
    return str(hash_type)


def _resources(resources: Any, hash_type: str) -> tuple[tuple[str, str, str], ...]:
    if not isinstance(resources, list) or not resources:
        raise errors.OmsBundleError("the statement lists no resources (files)", hint=_FORMAT_HINT)
    found = []
    for index, item in enumerate(resources):
        where = f"resource {index}"
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in ("name", "algorithm", "digest")):
            raise errors.OmsBundleError(f"{where} needs a name, an algorithm and a digest", hint=_FORMAT_HINT)
        if item["algorithm"] != hash_type:
            raise errors.OmsBundleError(
                f"{where} ({item['name']!r}) is hashed with {item['algorithm']!r}, the serialization says "
                f"{hash_type!r}",
                hint=_FORMAT_HINT,
            )
        found.append((item["name"], hash_type, _hex_bytes(item["digest"], f"{where}'s digest").hex()))
    return tuple(found)


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    """A JSON object from bytes, refusing a key given twice (readers disagree on which one wins)."""

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise errors.OmsBundleError(f"{what} names a key twice", hint=_FORMAT_HINT)
        return dict(pairs)

    try:
        parsed = json.loads(data.decode("utf-8"), object_pairs_hook=unique)
    except UnicodeDecodeError:
        raise errors.OmsBundleError(f"{what} is not UTF-8 text", hint=_FORMAT_HINT) from None
    except json.JSONDecodeError as exc:
        raise errors.OmsBundleError(f"{what} is not JSON ({exc.msg} at {exc.pos})", hint=_FORMAT_HINT) from None
    except RecursionError:
        raise errors.OmsBundleError(f"{what} is nested too deeply", hint=_FORMAT_HINT) from None
    if not isinstance(parsed, dict):
        raise errors.OmsBundleError(f"{what} is not a JSON object", hint=_FORMAT_HINT)
    return parsed


def _no_unknown(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise errors.OmsBundleError(
            f"{where} has a field {unknown[0]!r} a sigstore bundle does not define", hint=_FORMAT_HINT
        )


def _hex_bytes(text: str, where: str) -> bytes:
    if not HEX.fullmatch(text):
        raise errors.OmsBundleError(f"{where} is not a hex digest", hint=_FORMAT_HINT)
    return bytes.fromhex(text)

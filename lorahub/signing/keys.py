"""Identities: ECDSA P-256 key pairs that sign cards, audit events and (through a certificate) C2PA manifests.

P-256 is the one curve that DSSE/sigstore, C2PA and OpenSSF model signing all accept (docs/concepts/architecture.md,
decision 4), so one key serves all three. A key is named by its fingerprint: the SHA-256 of its DER
SubjectPublicKeyInfo, which is what a public PEM file encodes, so anyone holding the PEM can recompute it.

On disk, a :class:`KeyStore` is one folder (mode 0700) with, per identity, ``<fp16>.key.pem`` (PKCS#8, encrypted
when a passphrase is given, mode 0600 from the moment it exists) and ``<fp16>.json`` (the public facts).
"""

from __future__ import annotations

import builtins
import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from lorahub import errors
from lorahub.files.atomic import OWNER_ONLY, atomic_write
from lorahub.signing.timestamps import utc_now

MIN_PREFIX = 8
"""Shortest fingerprint prefix accepted as a reference: 32 bits make accidental collisions in one store unlikely."""

USER_ID = re.compile(r"^(?P<name>[^<>]*?)\s*<(?P<email>[^<>\s@]+@[^<>\s@]+)>$")
DEFAULT_FILE = "default"
USER_ID_HINT = 'Write the identity as "Name <email>", for example "Alice <alice@studio.example>".'


# --- public keys -----------------------------------------------------------------------------------------------


def fingerprint_of(public_key: ec.EllipticCurvePublicKey) -> str:
    """Lowercase hex SHA-256 of the DER SubjectPublicKeyInfo: stable across PEM re-encodings of the same key."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def public_key_from_pem(pem: bytes | str) -> tuple[ec.EllipticCurvePublicKey, str]:
    """Load a public key, refusing anything but P-256 so that every key lorahub trusts can sign everywhere."""
    data = pem.encode("ascii", "replace") if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise errors.KeyFileError(f"not a PEM public key ({exc.__class__.__name__})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise errors.KeyFileError(f"the key is {_key_kind(key)}, not ECDSA P-256")
    if not isinstance(key.curve, ec.SECP256R1):
        raise errors.KeyFileError(f"the key is on curve {key.curve.name}, not P-256 (secp256r1)")
    return key, fingerprint_of(key)


def public_pem_of(public_key: ec.EllipticCurvePublicKey) -> str:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode(
        "ascii"
    )


def verify_signature(public_pem: str, data: bytes, signature: bytes) -> bool:
    """True when ``signature`` (DER ECDSA/SHA-256) over ``data`` was made by the key in ``public_pem``.

    A malformed signature is simply not valid; a malformed key is a configuration error and raises KeyFileError.
    """
    key, _ = public_key_from_pem(public_pem)
    try:
        key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def _key_kind(key: object) -> str:
    return type(key).__name__.removeprefix("_").replace("PublicKey", "") or "an unknown kind of key"


# --- identities ------------------------------------------------------------------------------------------------


def parse_user_id(user_id: str) -> tuple[str, str]:
    """Split ``"Name <email>"`` (the OpenPGP convention people already know) into name and email."""
    match = USER_ID.fullmatch(user_id.strip())
    name = match.group("name").strip() if match else ""
    if match is None or not name:
        raise errors.KeyFileError(f"{user_id!r} is not an identity of the form Name <email>", hint=USER_ID_HINT)
    return name, match.group("email")


@dataclass(frozen=True)
class Identity:
    """The public facts of one key pair. ``created`` is ISO-8601 UTC."""

    name: str
    email: str
    fingerprint: str
    public_pem: str
    encrypted: bool
    created: str

    @property
    def user_id(self) -> str:
        return f"{self.name} <{self.email}>"

    @property
    def short_id(self) -> str:
        """The first 16 hex of the fingerprint: the file names in the key store."""
        return self.fingerprint[:16]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any, source: str) -> Identity:
        """Read an identity file, checking that its fingerprint really is its public key's."""
        fields = {"name": str, "email": str, "fingerprint": str, "public_pem": str, "encrypted": bool, "created": str}
        if not isinstance(data, dict) or set(data) != set(fields):
            raise errors.KeyFileError(f"{source}: not a lorahub identity file", hint=_STORE_HINT)
        for key, kind in fields.items():
            if not isinstance(data[key], kind):
                raise errors.KeyFileError(f"{source}: {key} is not a {kind.__name__}", hint=_STORE_HINT)
        identity = cls(**data)
        _, actual = public_key_from_pem(identity.public_pem)
        if actual != identity.fingerprint:
            raise errors.KeyFileError(f"{source}: the fingerprint does not match its public key", hint=_STORE_HINT)
        return identity


_STORE_HINT = "The key store was edited by hand or damaged; restore it from a backup."


class Signer:
    """A private key ready to sign. ``keyid`` is the fingerprint, the DSSE signature's key hint."""

    __slots__ = ("_key", "identity")

    def __init__(self, identity: Identity, private_key: ec.EllipticCurvePrivateKey) -> None:
        if fingerprint_of(private_key.public_key()) != identity.fingerprint:
            raise errors.KeyFileError(f"the private key of {identity.user_id} does not match its fingerprint")
        self.identity = identity
        self._key = private_key

    @property
    def keyid(self) -> str:
        return self.identity.fingerprint

    def sign(self, data: bytes) -> bytes:
        """ECDSA P-256 with SHA-256, DER-encoded: ES256 as DSSE, sigstore and OpenSSF model signing expect."""
        return self._key.sign(data, ec.ECDSA(hashes.SHA256()))

    def __repr__(self) -> str:
        return f"Signer({self.identity.user_id}, {self.identity.short_id})"


# --- the key store ---------------------------------------------------------------------------------------------


class KeyStore:
    """The identities of one lorahub home, in one private folder."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def create(self, user_id: str, passphrase: bytes | None = None) -> Identity:
        """Make a new key pair. With a passphrase the private key is stored encrypted (PKCS#8, best available)."""
        name, email = parse_user_id(user_id)
        if passphrase is not None and not passphrase:
            raise errors.PassphraseError(
                "an empty passphrase would not protect the key", hint="Give a passphrase, or none to store it plain."
            )
        if any(i.user_id == f"{name} <{email}>" for i in self.list()):
            raise errors.KeyExistsError(
                f"an identity {name} <{email}> already exists in {self.directory}",
                hint="Use it (`lorahub keys list`), or give the new key a different name.",
            )
        private_key = ec.generate_private_key(ec.SECP256R1())
        public_key = private_key.public_key()
        identity = Identity(
            name=name,
            email=email,
            fingerprint=fingerprint_of(public_key),
            public_pem=public_pem_of(public_key),
            encrypted=passphrase is not None,
            created=utc_now(),
        )
        self._ensure_directory()
        _write_private(self._key_path(identity.fingerprint), _private_pem(private_key, passphrase))
        _write_private(self._info_path(identity.fingerprint), _json_bytes(identity.to_json()))
        return identity

    def get(self, ref: str) -> Identity:
        """Find one identity by name, email, ``Name <email>`` or a fingerprint prefix of at least 8 hex."""
        matches = [i for i in self.list() if _matches(i, ref)]
        if not matches:
            raise errors.KeyNotFoundError(f"no identity matches {ref!r} in {self.directory}")
        if len(matches) > 1:
            listed = ", ".join(f"{i.user_id} {i.short_id}" for i in matches)
            raise errors.AmbiguousKeyError(f"{ref!r} matches {len(matches)} identities: {listed}")
        return matches[0]

    def default(self) -> Identity | None:
        """The identity to sign with when none is named: the only one, else the one set with set_default."""
        identities = self.list()
        if len(identities) == 1:
            return identities[0]
        chosen = self._read_default()
        return next((i for i in identities if i.fingerprint == chosen), None)

    def set_default(self, ref: str) -> Identity:
        identity = self.get(ref)
        self._ensure_directory()
        pointer = identity.fingerprint.encode("ascii") + b"\n"
        atomic_write(self.directory / DEFAULT_FILE, [pointer], mode=OWNER_ONLY)
        return identity

    def export_public(self, ref: str) -> str:
        """The public key as PEM: what others add to their trust store."""
        return self.get(ref).public_pem

    def signer(self, ref: str | None = None, passphrase: bytes | None = None) -> Signer:
        """A signer for ``ref`` (default identity when None). The passphrase is ignored for unencrypted keys."""
        identity = self.get(ref) if ref is not None else self.default()
        if identity is None:
            raise errors.KeyNotFoundError(
                f"no default identity in {self.directory}",
                hint="Name the identity to sign with, or choose one with `lorahub keys default NAME`.",
            )
        path = self._key_path(identity.fingerprint)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise errors.KeyFileError(
                f"{path}: cannot read the private key ({exc.strerror})", hint=_STORE_HINT
            ) from None
        return Signer(identity, _load_private(data, identity, passphrase))

    def list(self) -> builtins.list[Identity]:
        """Every identity, oldest first (ties by user id), so listings are stable."""
        if not self.directory.is_dir():
            return []
        found = [self._read_identity(p) for p in self.directory.glob("*.json") if not p.name.startswith(".")]
        return sorted(found, key=lambda i: (i.created, i.user_id, i.fingerprint))

    # --- files ---------------------------------------------------------------------------------------------------

    def _key_path(self, fingerprint: str) -> Path:
        return self.directory / f"{fingerprint[:16]}.key.pem"

    def _info_path(self, fingerprint: str) -> Path:
        return self.directory / f"{fingerprint[:16]}.json"

    def _ensure_directory(self) -> None:
        """Create the store private (0700): a key file's own mode is not enough if the folder lets others rename."""
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        self.directory.mkdir(mode=0o700, exist_ok=True)

    def _read_identity(self, path: Path) -> Identity:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise errors.KeyFileError(f"{path}: unreadable identity file ({exc})", hint=_STORE_HINT) from None
        return Identity.from_json(data, str(path))

    def _read_default(self) -> str | None:
        try:
            return (self.directory / DEFAULT_FILE).read_text(encoding="ascii").strip() or None
        except (OSError, UnicodeDecodeError):
            return None


def _matches(identity: Identity, ref: str) -> bool:
    folded = ref.strip().casefold()
    if folded in (identity.name.casefold(), identity.email.casefold(), identity.user_id.casefold()):
        return True
    prefix = folded.removeprefix("sha256:")
    is_hex = all(c in "0123456789abcdef" for c in prefix)
    return len(prefix) >= MIN_PREFIX and is_hex and identity.fingerprint.startswith(prefix)


def _private_pem(key: ec.EllipticCurvePrivateKey, passphrase: bytes | None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def _load_private(data: bytes, identity: Identity, passphrase: bytes | None) -> ec.EllipticCurvePrivateKey:
    """Load a private key, turning cryptography's errors into ones that say what to do."""
    if identity.encrypted and not passphrase:
        raise errors.PassphraseError(f"the key of {identity.user_id} is encrypted and no passphrase was given")
    try:
        key = serialization.load_pem_private_key(data, passphrase if identity.encrypted else None)
    except TypeError as exc:  # encryption state disagrees with the identity file
        raise errors.KeyFileError(f"the key file of {identity.user_id} does not match its identity ({exc})") from None
    except (ValueError, UnsupportedAlgorithm):
        if identity.encrypted:
            raise errors.PassphraseError(f"wrong passphrase for the key of {identity.user_id}") from None
        raise errors.KeyFileError(f"the key file of {identity.user_id} is damaged", hint=_STORE_HINT) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise errors.KeyFileError(f"the key file of {identity.user_id} does not hold a P-256 key", hint=_STORE_HINT)
    return key


def _json_bytes(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 and ``data``, never overwriting and never briefly readable by others: the
    bytes go to an owner-only temporary file, fsynced, that is then linked to its name, so a crash leaves no
    half-written key."""
    try:
        atomic_write(path, [data], mode=OWNER_ONLY, exclusive=True)
    except FileExistsError:
        raise errors.KeyExistsError(f"{path} already exists") from None

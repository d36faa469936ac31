"""The home's local certificate authority, and the certificates that let identities sign Content Credentials.

C2PA validators accept a signature only from an X.509 certificate with a particular profile (c2pa-rs
``sdk/src/crypto/cose/certificate_profile.rs``): v3, not a CA, KeyUsage digitalSignature, an EKU from an allow-list, an
AuthorityKeyIdentifier, and never a self-signed CA. A lorahub identity is a bare P-256 key, so each home runs a small CA
whose root signs one leaf certificate per identity, for the identity's own key (docs/concepts/architecture.md,
decision 4: one key signs cards, audit events and images). Readers that list the home's root as a trust anchor then
report ``Trusted``; everyone else sees a cryptographically ``Valid`` but untrusted credential until they add the root
(``lorahub trust add-ca``).

Layout under ``<home>/ca`` (folder mode 0700)::

    root/ca.pem, root/ca.key.pem   the root certificate and its key (0600; encrypted when a passphrase is given)
    certs/<fp16>.pem               each identity's chain, leaf first (issued here; ``.imported.pem`` if imported)
    certs/retired/                 chains replaced since, kept so old images still name their signer
    trusted/<sha16>.pem            extra roots this home trusts when it reads images
    settings.toml                  organisation, leaf validity, timestamp-authority URL

The root is written into a temporary folder that is renamed to ``root`` in one step, so two processes creating
it at once leave exactly one root, never a certificate without its key.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import secrets
import shutil
import tomllib
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from lorahub import errors
from lorahub.files.atomic import OWNER_ONLY, atomic_write

if TYPE_CHECKING:
    from lorahub.signing.keys import Identity

CA_DAYS = 30 * 365
"""The root outlives every leaf it issues (a leaf never ends after its issuer)."""
DEFAULT_LEAF_DAYS = 10 * 365
"""Without a timestamp authority an image turns Invalid when its leaf expires (docs/provenance.md): long-lived."""
DEFAULT_ORGANIZATION = "lorahub"
"""The leaf's ``O=``: C2PA readers show it as the credential's issuer."""
BACKDATE = timedelta(minutes=5)
"""``notBefore`` slightly in the past, so a clock a little behind still accepts a fresh certificate."""

DOCUMENT_SIGNING = ObjectIdentifier("1.3.6.1.5.5.7.3.36")
C2PA_SIGNING = ObjectIdentifier("1.3.6.1.4.1.62558.2.1")
SIGNING_EKUS = frozenset({ExtendedKeyUsageOID.EMAIL_PROTECTION, DOCUMENT_SIGNING, C2PA_SIGNING})
"""EKUs that let a leaf sign manifests (c2pa-rs ``valid_eku_oids.cfg``, less timeStamping and OCSPSigning)."""

_KEY_USAGE_FIELDS = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)
_STORE_HINT = "The home's ca/ folder was edited by hand or damaged; restore it from a backup."

CertificateSource = Literal["local-ca", "imported", "trusted-root"]
_Ext = TypeVar("_Ext", bound=x509.ExtensionType)


# --- what a certificate says -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CertificateInfo:
    """The facts of one certificate worth showing a user. Times are ISO-8601 UTC; ``serial`` is decimal, as C2PA
    readers print it; ``key_fingerprint`` is the SHA-256 of the public key's DER SPKI (lorahub's key fingerprint)."""

    subject: str
    issuer: str
    serial: str
    not_before: str
    not_after: str
    sha256: str
    key_fingerprint: str
    source: CertificateSource

    @classmethod
    def of(cls, cert: x509.Certificate, source: CertificateSource) -> CertificateInfo:
        spki = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return cls(
            subject=cert.subject.rfc4514_string(),
            issuer=cert.issuer.rfc4514_string(),
            serial=str(cert.serial_number),
            not_before=_iso(cert.not_valid_before_utc),
            not_after=_iso(cert.not_valid_after_utc),
            sha256=hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
            key_fingerprint=hashlib.sha256(spki).hexdigest(),
            source=source,
        )


@dataclass(frozen=True)
class ProvenanceSettings:
    """``<home>/ca/settings.toml``. ``tsa_url`` is an RFC 3161 timestamp authority: with one, images stay valid
    after their leaf expires; it is contacted at every signing, so leave it unset offline."""

    organization: str = DEFAULT_ORGANIZATION
    leaf_days: int = DEFAULT_LEAF_DAYS
    tsa_url: str | None = None

    def to_toml(self) -> str:
        # json.dumps with ensure_ascii writes strings TOML accepts as basic strings (\uXXXX escapes included).
        lines = [f"organization = {json.dumps(self.organization)}", f"leaf_days = {self.leaf_days}"]
        if self.tsa_url:
            lines.append(f"tsa_url = {json.dumps(self.tsa_url)}")
        return "# lorahub Content Credentials settings (`lorahub provenance settings`)\n" + "\n".join(lines) + "\n"


def check_settings(settings: ProvenanceSettings) -> ProvenanceSettings:
    if not settings.organization.strip():
        raise errors.SettingsError("the certificate organisation (O=) must not be empty")
    if not 1 <= settings.leaf_days <= CA_DAYS:
        raise errors.SettingsError(f"leaf_days must be between 1 and {CA_DAYS}, not {settings.leaf_days}")
    if settings.tsa_url is not None and not settings.tsa_url.startswith(("http://", "https://")):
        raise errors.SettingsError(f"the timestamp authority URL {settings.tsa_url!r} is not http(s)")
    return settings


# --- the certificate authority -----------------------------------------------------------------------------------


class LocalCA:
    """The certificate authority of one home (see the module docstring for the files)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    @property
    def root_dir(self) -> Path:
        return self.directory / "root"

    @property
    def root_path(self) -> Path:
        return self.root_dir / "ca.pem"

    @property
    def key_path(self) -> Path:
        return self.root_dir / "ca.key.pem"

    @property
    def settings_path(self) -> Path:
        return self.directory / "settings.toml"

    def exists(self) -> bool:
        return self.root_path.is_file() and self.key_path.is_file()

    # --- the root ----------------------------------------------------------------------------------------------

    def ensure(self, passphrase: bytes | None = None) -> x509.Certificate:
        """The root, created first if this home has none (homes made before the CA existed get one lazily)."""
        if not self.exists():
            self._create(passphrase)
        return self.root()

    def root(self) -> x509.Certificate:
        try:
            return x509.load_pem_x509_certificate(self.root_path.read_bytes())
        except FileNotFoundError:
            raise errors.CertificateInvalidError(
                f"{self.root_path}: this home has no certificate authority yet", hint="Run `lorahub init`."
            ) from None
        except ValueError:
            raise errors.CertificateInvalidError(f"{self.root_path}: not a PEM certificate", hint=_STORE_HINT) from None

    def root_pem(self) -> str:
        return self.root().public_bytes(serialization.Encoding.PEM).decode("ascii")

    @property
    def encrypted(self) -> bool:
        """True when the root's key is stored encrypted (it then needs the passphrase to issue certificates)."""
        try:
            return b"ENCRYPTED" in self.key_path.read_bytes()[:64]
        except OSError:
            return False

    def _create(self, passphrase: bytes | None) -> None:
        settings = self.settings()
        key = ec.generate_private_key(ec.SECP256R1())
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        # Each home's root gets its own name, so that readers trusting several homes tell them apart.
        name = _name(f"{settings.organization} local root CA {ski.digest.hex()[:8]}", settings.organization)
        root = _build(
            name,
            name,
            key.public_key(),
            key,
            timedelta(days=CA_DAYS),
            [
                (x509.BasicConstraints(ca=True, path_length=0), True),
                (_key_usage("key_cert_sign", "crl_sign"), True),
                (ski, False),
                (x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False),
            ],
        )
        _private_dir(self.directory)
        staging = self.directory / f".root.{secrets.token_hex(6)}.tmp"
        staging.mkdir(mode=0o700)
        root_pem = root.public_bytes(serialization.Encoding.PEM)
        try:
            atomic_write(staging / "ca.key.pem", [_private_pem(key, passphrase)], mode=OWNER_ONLY, exclusive=True)
            atomic_write(staging / "ca.pem", [root_pem], mode=OWNER_ONLY, exclusive=True)
            try:
                staging.rename(self.root_dir)
            except OSError:
                if not self.exists():  # not a lost race: something else is in the way
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _root_key(self, passphrase: bytes | None) -> ec.EllipticCurvePrivateKey:
        data = self.key_path.read_bytes()
        if self.encrypted and not passphrase:
            raise errors.PassphraseError(
                "the home's certificate authority key is encrypted and no passphrase was given"
            )
        try:
            key = serialization.load_pem_private_key(data, passphrase if self.encrypted else None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            if self.encrypted:
                raise errors.PassphraseError("wrong passphrase for the home's certificate authority key") from None
            raise errors.CertificateInvalidError(f"{self.key_path}: damaged key", hint=_STORE_HINT) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise errors.CertificateInvalidError(f"{self.key_path}: not an EC key", hint=_STORE_HINT)
        return key

    # --- leaves ------------------------------------------------------------------------------------------------

    def issue(
        self,
        identity: Identity,
        *,
        passphrase: bytes | None = None,
        valid_for: timedelta | None = None,
    ) -> list[x509.Certificate]:
        """Issue (and store) a leaf for ``identity``'s key: the chain ``[leaf, root]``. Any earlier chain of that
        identity, imported ones included, is replaced. ``valid_for`` defaults to the ``leaf_days`` setting and
        is cut to the root's own end."""
        from lorahub.signing.keys import public_key_from_pem

        root = self.ensure(passphrase)
        root_key = self._root_key(passphrase)
        settings = self.settings()
        public_key, _ = public_key_from_pem(identity.public_pem)
        validity = valid_for if valid_for is not None else timedelta(days=settings.leaf_days)
        leaf = _build(
            _name(identity.name, settings.organization),
            root.subject,
            public_key,
            root_key,
            validity,
            [
                (x509.BasicConstraints(ca=False, path_length=None), True),
                (_key_usage("digital_signature"), True),
                (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION, DOCUMENT_SIGNING]), False),
                (x509.SubjectAlternativeName([x509.RFC822Name(identity.email)]), False),
                (x509.SubjectKeyIdentifier.from_public_key(public_key), False),
                (x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), False),
            ],
            not_after_cap=root.not_valid_after_utc,
        )
        chain = [leaf, root]
        self._store_chain(identity.fingerprint, chain, "local-ca")
        return chain

    def import_chain(self, identity: Identity, pem: bytes | str) -> list[x509.Certificate]:
        """Store a chain from elsewhere (an organisation's C2PA certificate) for ``identity``, after checking that
        its leaf holds the identity's key, has the C2PA signing profile, is valid now, and that each certificate
        is issued by the next."""
        chain = parse_chain(pem)
        leaf = chain[0]
        leaf_fp = CertificateInfo.of(leaf, "imported").key_fingerprint
        if leaf_fp != identity.fingerprint:
            raise errors.CertificateInvalidError(
                f"the leaf certificate's public key ({leaf_fp[:16]}) is not the key of {identity.user_id}"
                f" ({identity.short_id})",
                hint="Ask your CA to certify this identity's key (`lorahub keys export NAME` prints it), or import "
                "the chain for the identity it was issued to (--key).",
            )
        check_leaf_profile(leaf)
        _check_current(leaf)
        _check_links(chain)
        self._store_chain(identity.fingerprint, chain, "imported")
        return chain

    def chain(self, fingerprint: str) -> list[x509.Certificate] | None:
        """The stored signing chain of the identity with this fingerprint (leaf first), or None."""
        source = self.chain_source(fingerprint)
        if source is None:
            return None
        path = self._chain_path(fingerprint, source)
        try:
            return x509.load_pem_x509_certificates(path.read_bytes())
        except ValueError:
            raise errors.CertificateInvalidError(f"{path}: not a PEM chain", hint=_STORE_HINT) from None

    def is_local(self, chain: list[x509.Certificate]) -> bool:
        """True when the chain's leaf was issued by this home's current root."""
        if not self.exists():
            return False
        try:
            chain[0].verify_directly_issued_by(self.root())
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True

    def signing_chain(self, identity: Identity, *, passphrase: bytes | None = None) -> list[x509.Certificate]:
        """The chain an identity signs images with. A missing or expired leaf from this home's CA, or one that a
        replaced root issued, is (re-)issued on the spot; an expired imported chain is an error, since only its
        CA can renew it."""
        chain = self.chain(identity.fingerprint)
        if chain is None:
            return self.issue(identity, passphrase=passphrase)
        if self.chain_source(identity.fingerprint) == "local-ca" and (_expired(chain[0]) or not self.is_local(chain)):
            return self.issue(identity, passphrase=passphrase)
        _check_current(chain[0])
        return chain

    def chain_source(self, fingerprint: str) -> CertificateSource | None:
        if self._chain_path(fingerprint, "imported").is_file():
            return "imported"
        return "local-ca" if self._chain_path(fingerprint, "local-ca").is_file() else None

    def _chain_path(self, fingerprint: str, source: CertificateSource) -> Path:
        suffix = ".imported.pem" if source == "imported" else ".pem"
        return self.directory / "certs" / f"{fingerprint[:16]}{suffix}"

    def _store_chain(self, fingerprint: str, chain: list[x509.Certificate], source: CertificateSource) -> None:
        """Write the chain under its source's name and drop the other one: an identity has one signing chain."""
        path = self._chain_path(fingerprint, source)
        _private_dir(self.directory)
        path.parent.mkdir(mode=0o700, exist_ok=True)
        other: CertificateSource = "local-ca" if source == "imported" else "imported"
        for old in (path, self._chain_path(fingerprint, other)):
            self._retire(old)
        atomic_write(path, [cert.public_bytes(serialization.Encoding.PEM) for cert in chain], mode=0o644)
        self._chain_path(fingerprint, other).unlink(missing_ok=True)

    def _retire(self, path: Path) -> None:
        """Keep a replaced chain under ``certs/retired/``: images it signed still name one of this home's
        identities when read back (:meth:`known_leaves`)."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        retired = path.parent / "retired"
        retired.mkdir(mode=0o700, exist_ok=True)
        atomic_write(retired / f"{hashlib.sha256(data).hexdigest()[:16]}-{path.name}", [data], mode=0o644)

    # --- trust anchors -----------------------------------------------------------------------------------------

    def add_trusted(self, pem: bytes | str) -> list[x509.Certificate]:
        """Trust the certificates in ``pem`` as anchors when reading images (another home's root, an
        organisation's CA). Adding one twice is harmless."""
        certs = parse_chain(pem, what="certificate")
        folder = self.directory / "trusted"
        _private_dir(self.directory)
        folder.mkdir(mode=0o700, exist_ok=True)
        for cert in certs:
            der_hash = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
            atomic_write(folder / f"{der_hash[:16]}.pem", [cert.public_bytes(serialization.Encoding.PEM)], mode=0o644)
        return certs

    def trusted(self) -> list[x509.Certificate]:
        folder = self.directory / "trusted"
        found: list[x509.Certificate] = []
        for path in sorted(folder.glob("*.pem")) if folder.is_dir() else []:
            try:
                found += x509.load_pem_x509_certificates(path.read_bytes())
            except ValueError:
                raise errors.CertificateInvalidError(f"{path}: not a PEM certificate", hint=_STORE_HINT) from None
        return found

    def anchors_pem(self) -> str:
        """The home's root and every trusted root, concatenated: what readers list as ``trust.user_anchors``."""
        certs = ([self.root()] if self.exists() else []) + self.trusted()
        return "".join(cert.public_bytes(serialization.Encoding.PEM).decode("ascii") for cert in certs)

    def known_leaves(self) -> dict[str, str]:
        """Serial number (decimal) → key fingerprint of the leaves stored in this home: lets a reader say that an
        image was signed by one of this home's identities."""
        folder = self.directory / "certs"
        found: dict[str, str] = {}
        paths = [*folder.glob("retired/*.pem"), *folder.glob("*.pem")] if folder.is_dir() else []
        for path in paths:
            try:
                leaf = x509.load_pem_x509_certificates(path.read_bytes())[0]
            except (ValueError, IndexError):
                continue
            found[str(leaf.serial_number)] = CertificateInfo.of(leaf, "local-ca").key_fingerprint
        return found

    # --- settings ----------------------------------------------------------------------------------------------

    def settings(self) -> ProvenanceSettings:
        try:
            data = tomllib.loads(self.settings_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return ProvenanceSettings()
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise errors.SettingsError(f"{self.settings_path}: {exc}", hint="Fix the TOML, or delete it.") from None
        known = {"organization": str, "leaf_days": int, "tsa_url": str}
        for key, value in data.items():
            if key not in known or not isinstance(value, known[key]) or isinstance(value, bool):
                raise errors.SettingsError(
                    f"{self.settings_path}: unknown or mistyped setting {key!r}",
                    hint="Known settings: organization (text), leaf_days (integer), tsa_url (text).",
                )
        return check_settings(ProvenanceSettings(**data))

    def update_settings(self, **changes: object) -> ProvenanceSettings:
        """Change some settings (``tsa_url=None`` removes the URL) and write the file."""
        settings = check_settings(replace(self.settings(), **changes))  # type: ignore[arg-type]
        _private_dir(self.directory)
        atomic_write(self.settings_path, [settings.to_toml().encode("utf-8")], mode=0o644)
        return settings


# --- checks ------------------------------------------------------------------------------------------------------


def parse_chain(pem: bytes | str, *, what: str = "certificate chain") -> list[x509.Certificate]:
    data = pem.encode("ascii", "replace") if isinstance(pem, str) else pem
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise errors.CertificateInvalidError(f"no PEM {what} found (expected -----BEGIN CERTIFICATE----- blocks)")
    return certs


def check_leaf_profile(leaf: x509.Certificate) -> None:
    """The parts of the C2PA signing-certificate profile a user-supplied leaf most often gets wrong, checked here
    so that the error names the problem instead of failing later inside the C2PA library."""
    problems = []
    if leaf.version != x509.Version.v3:
        problems.append("it is not X.509 v3")
    constraints = _extension(leaf, x509.BasicConstraints)
    if constraints is not None and constraints.ca:
        problems.append("it is a CA certificate")
    usage = _extension(leaf, x509.KeyUsage)
    if usage is None or not (usage.digital_signature or usage.content_commitment) or usage.key_cert_sign:
        problems.append("its KeyUsage lacks digitalSignature (or allows keyCertSign)")
    ekus = _extension(leaf, x509.ExtendedKeyUsage)
    if ekus is None or not SIGNING_EKUS & set(ekus) or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in set(ekus):
        problems.append("its ExtendedKeyUsage has none of emailProtection, documentSigning or C2PA signing")
    if _extension(leaf, x509.AuthorityKeyIdentifier) is None:
        problems.append("it has no AuthorityKeyIdentifier")
    if leaf.issuer == leaf.subject:
        problems.append("it is self-signed")
    if problems:
        raise errors.CertificateInvalidError(
            "the leaf certificate cannot sign Content Credentials: " + "; ".join(problems)
        )


def _check_current(leaf: x509.Certificate) -> None:
    now = datetime.now(UTC)
    if leaf.not_valid_after_utc <= now:
        raise errors.CertificateExpiredError(f"the signing certificate expired on {_iso(leaf.not_valid_after_utc)}")
    if leaf.not_valid_before_utc > now:
        raise errors.CertificateInvalidError(
            f"the signing certificate is not valid before {_iso(leaf.not_valid_before_utc)}",
            hint="Check this machine's clock.",
        )


def _check_links(chain: list[x509.Certificate]) -> None:
    for cert, issuer in itertools.pairwise(chain):
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            raise errors.CertificateInvalidError(
                f"{cert.subject.rfc4514_string()} is not issued by the next certificate in the chain"
                f" ({issuer.subject.rfc4514_string()})",
                hint="Order the PEM file leaf first, then each issuer.",
            ) from None


def _expired(cert: x509.Certificate) -> bool:
    return cert.not_valid_after_utc <= datetime.now(UTC)


def _extension(cert: x509.Certificate, kind: type[_Ext]) -> _Ext | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


# --- building ----------------------------------------------------------------------------------------------------


def _name(common_name: str, organization: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_usage(*allowed: str) -> x509.KeyUsage:
    return x509.KeyUsage(**{field: field in allowed for field in _KEY_USAGE_FIELDS})


def _build(  # noqa: PLR0917 (a certificate's fields, in the order X.509 lists them)
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer_key: ec.EllipticCurvePrivateKey,
    validity: timedelta,
    extensions: list[tuple[x509.ExtensionType, bool]],
    *,
    not_after_cap: datetime | None = None,
) -> x509.Certificate:
    now = datetime.now(UTC)
    not_after = now + validity
    if not_after_cap is not None:
        not_after = min(not_after, not_after_cap)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _private_pem(key: ec.EllipticCurvePrivateKey, passphrase: bytes | None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def _private_dir(directory: Path) -> None:
    directory.parent.mkdir(parents=True, exist_ok=True)
    directory.mkdir(mode=0o700, exist_ok=True)

"""The home's certificate authority, identity certificates, imported chains, trust anchors and expiry."""

from __future__ import annotations

import shutil
import stat
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from lorahub import Hub, errors
from lorahub.provenance import BaseRef, LocalCA
from lorahub.provenance.ca import DOCUMENT_SIGNING
from tests.provenance.helpers import make_home, noise_image

BASE = BaseRef("sd15")


def _pem(chain: list[x509.Certificate]) -> bytes:
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in chain)


def _leaf_with_eku(ca: LocalCA, public_pem: str, eku: x509.ObjectIdentifier) -> x509.Certificate:
    """A leaf for the identity's key whose only EKU is ``eku`` (codeSigning: C2PA refuses it)."""
    root, root_key = ca.root(), ca._root_key(None)
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "code signer")]))
        .issuer_name(root.subject)
        .public_key(serialization.load_pem_public_key(public_pem.encode()))  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )


def test_identity_leaf_has_the_c2pa_profile(hub: Hub) -> None:
    ca = hub.certificate_authority
    identity = hub.keys.default()
    assert identity is not None
    chain = ca.chain(identity.fingerprint)
    assert chain is not None and len(chain) == 2  # issued when the identity was created
    leaf, root = chain
    assert leaf.version == x509.Version.v3
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    ekus = set(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert ekus == {ExtendedKeyUsageOID.EMAIL_PROTECTION, DOCUMENT_SIGNING}
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier) is not None
    assert leaf.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)[0].value == "lorahub"
    spki = leaf.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert spki.decode() == identity.public_pem  # the identity's own key, certified
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert timedelta(days=3649) < lifetime < timedelta(days=3651)
    leaf.verify_directly_issued_by(root)


def test_ca_files_are_private_and_roots_are_per_home(hub: Hub, tmp_path: Path) -> None:
    ca = hub.certificate_authority
    assert stat.S_IMODE(ca.key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(ca.directory.stat().st_mode) == 0o700
    assert not ca.encrypted
    other = LocalCA(tmp_path / "other-ca")
    other.ensure()
    assert other.root().subject != ca.root().subject
    assert ca.ensure().serial_number == ca.root().serial_number  # ensure never replaces a root


def test_ca_key_is_encrypted_with_an_encrypted_identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LORAHUB_PASSPHRASE", "correct horse")
    hub = Hub.open(tmp_path / "home")
    hub.create_identity("Eve <eve@example.org>", passphrase_env="LORAHUB_PASSPHRASE")
    assert hub.certificate_authority.encrypted
    assert b"ENCRYPTED" in hub.certificate_authority.key_path.read_bytes()
    out = hub.sign_image(noise_image(), base=BASE, adapters=[], out=tmp_path / "x.png")
    assert hub.inspect_image(out.path or "").state == "Trusted"
    monkeypatch.setenv("LORAHUB_PASSPHRASE", "wrong")
    with pytest.raises(errors.PassphraseError):
        hub.issue_certificate()
    monkeypatch.delenv("LORAHUB_PASSPHRASE")
    with pytest.raises(errors.PassphraseError):
        hub.issue_certificate()


def test_homes_made_before_the_ca_get_one_lazily(tmp_path: Path) -> None:
    hub = make_home(tmp_path / "home")
    ca = hub.certificate_authority
    shutil.rmtree(ca.directory)  # as if the home predated the CA
    assert not ca.exists()
    signed = hub.sign_image(noise_image(), base=BASE, adapters=[], out=tmp_path / "x.png")
    assert ca.exists()
    assert hub.inspect_image(signed.path or "").state == "Trusted"


def test_import_cert_from_an_organisation_ca(hub: Hub, tmp_path: Path) -> None:
    organisation = LocalCA(tmp_path / "org-ca")
    organisation.update_settings(organization="Studio Example Ltd")
    identity = hub.keys.default()
    assert identity is not None
    chain = organisation.issue(identity)
    imported = hub.import_certificate(_pem(chain))
    assert imported[0].source == "imported" and "Studio Example Ltd" in imported[0].subject
    assert hub.certificate().source == "imported"
    out = hub.sign_image(noise_image(), base=BASE, adapters=[], out=tmp_path / "x.png")
    report = hub.inspect_image(out.path or "")
    assert (report.state, report.signer["organization"]) == ("Valid", "Studio Example Ltd")
    hub.trust_add_ca(organisation.root_pem())
    assert hub.inspect_image(out.path or "").state == "Trusted"
    hub.issue_certificate()  # back to the home's own CA
    assert hub.certificate().source == "local-ca"
    assert [e["action"] for e in hub.audit()][-4:] == ["import-cert", "generate", "trust-ca", "issue-cert"]


def test_import_cert_refuses_another_keys_certificate(hub: Hub, tmp_path: Path) -> None:
    other = make_home(tmp_path / "other", "Mallory <mallory@example.org>")
    mallory = other.keys.default()
    assert mallory is not None
    chain = other.certificate_authority.chain(mallory.fingerprint)
    assert chain is not None
    with pytest.raises(errors.CertificateInvalidError, match="is not the key of Alice Maker") as caught:
        hub.import_certificate(_pem(chain))
    assert caught.value.code == "certificate-invalid" and caught.value.hint
    assert hub.certificate().source == "local-ca"  # nothing was stored


def test_import_cert_refuses_bad_chains(hub: Hub, tmp_path: Path) -> None:
    identity = hub.keys.default()
    assert identity is not None
    organisation = LocalCA(tmp_path / "org-ca")
    organisation.ensure()
    with pytest.raises(errors.CertificateInvalidError, match="no PEM"):
        hub.import_certificate(b"hello")
    with pytest.raises(errors.CertificateInvalidError, match="is not the key of"):
        hub.import_certificate(organisation.root_pem())
    code_signing = _leaf_with_eku(organisation, identity.public_pem, ExtendedKeyUsageOID.CODE_SIGNING)
    with pytest.raises(errors.CertificateInvalidError, match="ExtendedKeyUsage has none of"):
        hub.import_certificate(_pem([code_signing, organisation.root()]))
    expired = organisation.issue(identity, valid_for=timedelta(seconds=-1))
    with pytest.raises(errors.CertificateExpiredError) as caught:
        hub.import_certificate(_pem(expired))
    assert caught.value.code == "certificate-expired"
    leaf, _ = organisation.issue(identity)
    wrong_root = LocalCA(tmp_path / "unrelated")
    with pytest.raises(errors.CertificateInvalidError, match="not issued by the next"):
        hub.import_certificate(_pem([leaf, wrong_root.ensure()]))


def test_expired_leaf_turns_signed_images_invalid(hub: Hub, tmp_path: Path) -> None:
    """Documented behaviour (docs/provenance.md, "When a certificate expires"): without a timestamp authority a
    C2PA reader judges the leaf against today's date, so an image is Trusted while its leaf is valid and Invalid
    (signingCredential.expired) afterwards; lorahub re-issues an expired local leaf at the next signing."""
    chain = hub.issue_certificate(valid_for=timedelta(seconds=2))
    not_after = datetime.strptime(chain[0].not_after, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    signed = hub.sign_image(noise_image(), base=BASE, adapters=[], out=tmp_path / "early.png")
    assert hub.inspect_image(tmp_path / "early.png").state == "Trusted"
    # Certificate times have whole seconds and the reader compares whole seconds: allow one more.
    time.sleep(max(0.0, (not_after - datetime.now(UTC)).total_seconds()) + 1.2)
    report = hub.inspect_image(tmp_path / "early.png")
    assert report.state == "Invalid"
    assert "signingCredential.expired" in report.codes
    assert any("expired" in note for note in report.notes)
    renewed = hub.sign_image(noise_image(), base=BASE, adapters=[], out=tmp_path / "later.png")
    assert renewed.sha256 != signed.sha256
    assert hub.inspect_image(tmp_path / "later.png").state == "Trusted"
    assert hub.certificate().chain[0].serial != chain[0].serial
    again = hub.inspect_image(tmp_path / "early.png")  # its leaf was replaced (retired), not forgotten
    assert again.signer["identity"] == "Alice Maker <alice@studio.example>"


def test_expired_imported_chain_is_an_error_at_signing(hub: Hub, tmp_path: Path) -> None:
    identity = hub.keys.default()
    assert identity is not None
    organisation = LocalCA(tmp_path / "org-ca")
    chain = organisation.issue(identity, valid_for=timedelta(seconds=2))
    hub.import_certificate(_pem(chain))
    time.sleep(max(0.0, (chain[0].not_valid_after_utc - datetime.now(UTC)).total_seconds()) + 0.2)
    with pytest.raises(errors.CertificateExpiredError, match="expired"):
        hub.sign_image(noise_image(), base=BASE, adapters=[], out=tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_settings_round_trip_and_validation(hub: Hub) -> None:
    settings = hub.provenance_settings(leaf_days=30, organization='Studio "Ü"', tsa_url="https://tsa.example/")
    assert (settings.leaf_days, settings.organization, settings.tsa_url) == (30, 'Studio "Ü"', "https://tsa.example/")
    assert hub.provenance_settings() == settings  # read back from settings.toml
    assert hub.provenance_settings(tsa_url=None).tsa_url is None
    chain = hub.issue_certificate()
    assert 'O=Studio \\"Ü\\"' in chain[0].subject or "Studio" in chain[0].subject
    with pytest.raises(errors.SettingsError):
        hub.provenance_settings(leaf_days=0)
    with pytest.raises(errors.SettingsError):
        hub.provenance_settings(tsa_url="ftp://tsa.example")
    hub.certificate_authority.settings_path.write_text("leaf_days = 'many'\n")
    with pytest.raises(errors.SettingsError, match="mistyped"):
        hub.provenance_settings()


def test_unreachable_timestamp_authority_is_a_clear_error(hub: Hub, tmp_path: Path) -> None:
    hub.provenance_settings(tsa_url="http://127.0.0.1:9/")
    with pytest.raises(errors.C2paFailedError, match="timestamp authority"):
        hub.sign_image(noise_image(), base=BASE, adapters=[], out=tmp_path / "x.png")

"""The Hub's Content Credentials methods: the home's CA, certificates, signing images, reading them, auditing.

A mixin so that ``hub.py`` only names it: the Hub is the one object users hold, and these methods need its
catalog, key store and settings.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import rfc8785

from lorahub import errors
from lorahub.sdk.refs import parse_weighted
from lorahub.unset import UNSET, Unset, given

if TYPE_CHECKING:
    from PIL import Image

    from lorahub.provenance import (
        AdapterFacts,
        AdapterUse,
        BaseRef,
        C2paCredentials,
        CertificateInfo,
        ImageReport,
        LocalCA,
        ProvenanceSettings,
        SignedImage,
        TrainingMiningEntry,
    )
    from lorahub.registry.catalog import AdapterVersion, AuditActor, Catalog
    from lorahub.sdk.home import Settings
    from lorahub.signing.keys import Identity, KeyStore, Signer
    from lorahub.signing.signed import SignedCard
    from lorahub.signing.trust import KeyRecord

GENERATE_ACTION = "generate"
"""The audit action recorded for every signed image (details: image sha256, base, adapters, output path)."""


@dataclass(frozen=True)
class CertificateView:
    """An identity's signing chain as ``lorahub keys cert`` shows it."""

    identity: str
    fingerprint: str
    source: str | None
    chain: tuple[CertificateInfo, ...]
    pem: str
    """The chain as PEM, leaf first."""


class ProvenanceMixin:
    """Content Credentials methods of :class:`lorahub.sdk.hub.Hub`."""

    if TYPE_CHECKING:  # what the Hub provides
        settings: Settings
        catalog: Catalog
        keys: KeyStore

        def signer(self, ref: str | None = None) -> Signer: ...
        def audit_actor(self, signer: Signer | None = None) -> AuditActor: ...
        def version(self, ref: str) -> AdapterVersion: ...
        def signed_card(self, version: AdapterVersion) -> SignedCard: ...
        def lookup(self, fingerprint: str) -> KeyRecord | None: ...
        def _passphrase(self, env_var: str | None = None) -> bytes | None: ...
        def _log_quietly(self, action: str, digest: str | None, details: dict[str, Any]) -> None: ...

    # --- the certificate authority ----------------------------------------------------------------------------

    @property
    def certificate_authority(self) -> LocalCA:
        from lorahub.provenance.ca import LocalCA

        return LocalCA(self.settings.home / "ca")

    def ensure_ca(self) -> CertificateInfo:
        """The home's root certificate, created if missing (``lorahub init``). Its key is encrypted with the
        passphrase in the environment when one is set."""
        from lorahub.provenance.ca import CertificateInfo

        return CertificateInfo.of(self.certificate_authority.ensure(self._passphrase()), "local-ca")

    def provenance_settings(
        self,
        *,
        organization: str | Unset = UNSET,
        leaf_days: int | Unset = UNSET,
        tsa_url: str | Unset | None = UNSET,
    ) -> ProvenanceSettings:
        """The CA settings (organisation, leaf validity in days, timestamp-authority URL); the arguments given
        change them and are saved (``tsa_url=None`` removes the URL), those left out stay as they are."""
        ca = self.certificate_authority
        changes = given(organization=organization, leaf_days=leaf_days, tsa_url=tsa_url)
        return ca.update_settings(**changes) if changes else ca.settings()

    def issue_certificate(
        self, key: str | None = None, *, days: int | None = None, valid_for: timedelta | None = None
    ) -> list[CertificateInfo]:
        """Issue a fresh leaf for an identity (default: the default identity) from the home's CA, replacing its
        chain (an imported one too). ``days`` overrides the ``leaf_days`` setting."""
        from lorahub.provenance.ca import CertificateInfo

        identity = self._identity(key)
        validity = valid_for if valid_for is not None else timedelta(days=days) if days is not None else None
        chain = self.certificate_authority.issue(identity, passphrase=self._ca_passphrase(identity), valid_for=validity)
        infos = [CertificateInfo.of(cert, "local-ca") for cert in chain]
        self._log_quietly("issue-cert", None, _cert_details(identity, infos[0]))
        return infos

    def issue_first_certificate(self, identity: Identity, passphrase: bytes | None) -> None:
        """Give a new identity its leaf at once (``keys create``); when the CA key is encrypted and no passphrase
        is at hand, the leaf is issued at its first use instead."""
        ca = self.certificate_authority
        try:
            ca.ensure(passphrase)
            ca.issue(identity, passphrase=passphrase or self._passphrase())
        except errors.PassphraseError:
            return

    def import_certificate(self, chain_pem: bytes | str, key: str | None = None) -> list[CertificateInfo]:
        """Sign images with a chain from elsewhere (an organisation's C2PA certificate) for an identity whose key
        the leaf certifies."""
        from lorahub.provenance.ca import CertificateInfo

        identity = self._identity(key)
        chain = self.certificate_authority.import_chain(identity, chain_pem)
        infos = [CertificateInfo.of(cert, "imported") for cert in chain]
        self._log_quietly("import-cert", None, _cert_details(identity, infos[0]))
        return infos

    def certificate(self, key: str | None = None) -> CertificateView:
        """The chain an identity signs with now (issued on first need)."""
        from cryptography.hazmat.primitives import serialization

        from lorahub.provenance.ca import CertificateInfo

        identity = self._identity(key)
        ca = self.certificate_authority
        chain = ca.signing_chain(identity, passphrase=self._ca_passphrase(identity))
        source = ca.chain_source(identity.fingerprint) or "local-ca"
        infos = tuple(CertificateInfo.of(cert, source) for cert in chain)
        pem = "".join(cert.public_bytes(serialization.Encoding.PEM).decode("ascii") for cert in chain)
        return CertificateView(identity.user_id, identity.fingerprint, source, infos, pem)

    def trust_add_ca(self, pem: bytes | str) -> list[CertificateInfo]:
        """Trust the root(s) in ``pem`` when reading images: another home's ``ca.pem``, an organisation's CA."""
        from lorahub.provenance.ca import CertificateInfo

        infos = [CertificateInfo.of(cert, "trusted-root") for cert in self.certificate_authority.add_trusted(pem)]
        for info in infos:
            self._log_quietly("trust-ca", None, {"subject": info.subject, "sha256": info.sha256})
        return infos

    def trusted_cas(self) -> list[CertificateInfo]:
        from lorahub.provenance.ca import CertificateInfo

        ca = self.certificate_authority
        own = [CertificateInfo.of(ca.root(), "local-ca")] if ca.exists() else []
        return own + [CertificateInfo.of(cert, "trusted-root") for cert in ca.trusted()]

    # --- what the provenance package asks of a home -----------------------------------------------------------

    def c2pa_credentials(self, key: str | None = None) -> C2paCredentials:
        """An identity's signing key and certificate chain, ready for :func:`lorahub.provenance.sign_image`."""
        from cryptography.hazmat.primitives import serialization

        from lorahub.provenance.sign import C2paCredentials

        signer = self.signer(key)
        ca = self.certificate_authority
        chain = ca.signing_chain(signer.identity, passphrase=self._ca_passphrase(signer.identity))
        pem = "".join(cert.public_bytes(serialization.Encoding.PEM).decode("ascii") for cert in chain)
        return C2paCredentials(pem, signer.sign, ca.settings().tsa_url, signer.keyid)

    def c2pa_trust_anchors(self) -> str:
        return self.certificate_authority.anchors_pem()

    def adapter_facts(self, content_digest: str) -> AdapterFacts | None:
        from lorahub.provenance.read import AdapterFacts
        from lorahub.signing.signed import verify_card

        version = self.catalog.find_by_content(content_digest, include_removed=True)
        if version is None:
            return None
        trusted = verify_card(self.signed_card(version), self).trusted
        consent = version.consent_status or "unknown"
        return AdapterFacts(version.ref, version.license_id, consent, trusted, version.removed)

    def certificate_owner(self, serial: str) -> str | None:
        fingerprint = self.certificate_authority.known_leaves().get(serial)
        if fingerprint is None:
            return None
        found = [i for i in self.keys.list() if i.fingerprint == fingerprint]
        return found[0].user_id if found else fingerprint

    # --- images -----------------------------------------------------------------------------------------------

    def adapter_use(self, ref: str, weight: float = 1.0) -> AdapterUse:
        """A catalogued version as applied with ``weight``: what :meth:`sign_image` lists. Signers are the keys
        whose signature over the card is valid."""
        from lorahub.provenance.sign import AdapterUse
        from lorahub.signing.signed import verify_card

        version = self.version(ref)
        checks = verify_card(self.signed_card(version), self).signatures
        return AdapterUse(
            name=version.name,
            content_digest=version.content_digest,
            weight=weight,
            version=version.number,
            license=version.license_id,
            signers=tuple(c.keyid for c in checks if c.valid),
            sha256=version.blob_sha256,
            consent=version.consent_status or "unknown",
        )

    def base_ref(
        self,
        target: str | os.PathLike[str],
        *,
        name: str | None = None,
        license: str | None = None,
        family: str | None = None,
    ) -> BaseRef:
        """Describe a base model for :meth:`sign_image`. A checkpoint file's digest is its SHA-256; a pipeline
        folder's (diffusers layout) is the SHA-256 of the RFC 8785 JSON object mapping each file's relative path
        to its SHA-256 (hidden files skipped), so it names the exact weights and configs. Digests are cached in
        the catalog's file cache by path, size, mtime and inode: gigabytes are read once, not per image. A name
        that is no path (a hub id) gives a BaseRef without a digest."""
        from lorahub.provenance.sign import BaseRef

        path = Path(target)
        label = name or (path.name if path.exists() else str(target))
        if path.is_file():
            return BaseRef(label, self._file_sha256(path), license, family)
        if not path.is_dir():
            return BaseRef(label, None, license, family)
        files = sorted(
            p for p in path.rglob("*") if p.is_file() and not any(x.startswith(".") for x in p.relative_to(path).parts)
        )
        if not files:
            raise errors.PathNotFoundError(f"{path} holds no files", hint="Give a diffusers pipeline folder.")
        index = {f.relative_to(path).as_posix(): self._file_sha256(f) for f in files}
        return BaseRef(label, hashlib.sha256(rfc8785.dumps(index)).hexdigest(), license, family)

    def _file_sha256(self, path: Path) -> str:
        """A base file's SHA-256: named by its Hugging Face cache blob, remembered by stat facts, else hashed."""
        from lorahub.files.folders import cached_sha256

        known = cached_sha256(path)
        if known is not None:
            return known
        resolved = path.resolve()
        stat = resolved.stat()
        cached = self.catalog.file_cache_get(str(resolved), stat.st_size, stat.st_mtime_ns, stat.st_ino)
        if cached is not None:
            return cached.sha256
        digest = hashlib.sha256()
        with resolved.open("rb") as handle:
            while chunk := handle.read(1 << 24):
                digest.update(chunk)
        self.catalog.file_cache_put(
            str(resolved), stat.st_size, stat.st_mtime_ns, stat.st_ino, sha256=digest.hexdigest()
        )
        return digest.hexdigest()

    def adapter_uses(self, specs: Sequence[str]) -> list[AdapterUse]:
        """``NAME[@VERSION][:WEIGHT]`` specs (the CLI's ``--adapter``) as :class:`AdapterUse` s."""
        return [self.adapter_use(ref, weight) for ref, weight in map(parse_weighted, specs)]

    def sign_image(
        self,
        image: Image.Image | str | os.PathLike[str] | bytes,
        *,
        base: BaseRef,
        adapters: Sequence[AdapterUse],
        key: str | None = None,
        out: str | os.PathLike[str] | None = None,
        record: bool = True,
        training_mining: Mapping[str, str | TrainingMiningEntry] | None = None,
        replace: bool = False,
        prompt: str | None = None,
        negative_prompt: str | None = None,
        seed: int | None = None,
        steps: int | None = None,
        scheduler: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        thumbnail: bool = False,
    ) -> SignedImage:
        """Sign ``image`` as made by ``base`` and ``adapters`` with an identity's certificate, write it to
        ``out``, and (``record``) append a ``generate`` audit event. The prompt, seed, steps, scheduler and other
        ``parameters`` go into the manifest as the generation's settings; ``thumbnail`` embeds a 256-px JPEG
        preview (off by default: it costs several times the signing)."""
        from lorahub.provenance.sign import sign_image

        credentials = self.c2pa_credentials(key)
        signed = sign_image(
            image,
            base=base,
            adapters=adapters,
            signer=credentials,
            out=out,
            training_mining=training_mining,
            replace=replace,
            prompt=prompt,
            negative_prompt=negative_prompt,
            seed=seed,
            steps=steps,
            scheduler=scheduler,
            parameters=parameters,
            thumbnail=thumbnail,
        )
        if record:
            self.record_generation(
                signed.sha256, base=base, adapters=adapters, out=signed.path, credentials=credentials
            )
        return signed

    def record_generation(
        self,
        image_sha256: str,
        *,
        base: BaseRef,
        adapters: Sequence[AdapterUse],
        out: str | os.PathLike[str] | None = None,
        key: str | None = None,
        credentials: C2paCredentials | None = None,
    ) -> dict[str, Any]:
        """Append the ``generate`` audit event for one image, signed by the identity that made it (``key``, or
        the ``credentials`` the image was signed with, which saves loading the key again); ``lorahub audit
        --adapter NAME`` then lists it under each adapter it names."""
        from lorahub.registry.catalog import AuditActor
        from lorahub.sdk.records import event_dict

        details = {
            "image_sha256": image_sha256,
            "base": base.to_dict(),
            "adapters": [
                {"name": a.name, "version": a.version, "content_digest": a.content_digest, "weight": a.weight}
                for a in adapters
            ],
            "out": str(Path(out).absolute()) if out is not None else None,
        }
        if credentials is not None and credentials.key_fingerprint is not None:
            actor = AuditActor(credentials.key_fingerprint, credentials.sign)
        else:
            actor = self.audit_actor(self.signer(key))
        event = self.catalog.log(GENERATE_ACTION, audit=actor, details=details)
        return event_dict(event)

    def inspect_image(self, path: str | os.PathLike[str] | bytes) -> ImageReport:
        """Validate an image's Content Credentials against this home's trust anchors and catalog."""
        from lorahub.provenance.read import inspect_image

        return inspect_image(path, self)

    # --- helpers ----------------------------------------------------------------------------------------------

    def _identity(self, key: str | None) -> Identity:
        identity = self.keys.get(key) if key is not None else self.keys.default()
        if identity is None:
            raise errors.KeyNotFoundError(
                "this home has no default identity",
                hint='Create one: lorahub keys create "Your Name <you@example.com>", or name one with --key.',
            )
        return identity

    def _ca_passphrase(self, identity: Identity) -> bytes | None:
        """The CA key's passphrase: the environment's, used when the CA key or the identity is encrypted (a CA
        created lazily for an encrypted identity is encrypted too)."""
        needed = identity.encrypted or self.certificate_authority.encrypted
        return self._passphrase() if needed else None


def _cert_details(identity: Identity, leaf: CertificateInfo) -> dict[str, Any]:
    return {
        "identity": identity.fingerprint,
        "subject": leaf.subject,
        "issuer": leaf.issuer,
        "serial": leaf.serial,
        "not_after": leaf.not_after,
        "sha256": leaf.sha256,
    }

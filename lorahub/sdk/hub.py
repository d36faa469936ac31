"""The Hub: one home (catalog, blob store, identities, policy) and everything done with it.

The CLI calls one Hub method per command; library users do the same (``Hub.open()``).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from lorahub import errors
from lorahub.sdk.home import Settings, mask_url, open_blob_store
from lorahub.sdk.policy import Policy, ensure_default_policy
from lorahub.sdk.provenance import ProvenanceMixin
from lorahub.sdk.records import event_dict, summary

if TYPE_CHECKING:
    from datetime import datetime

    from lorahub.licenses import LicenseTerms, Verdict
    from lorahub.registry.blobs import BlobStorage
    from lorahub.registry.catalog import AdapterVersion, Catalog, Filters, RoleRow
    from lorahub.sdk.adding import AddOptions, AddResult
    from lorahub.sdk.backup import BackupResult, RestoreResult
    from lorahub.sdk.baking import BakeResult
    from lorahub.sdk.batch import BatchResult, Progress
    from lorahub.sdk.browsing import Page
    from lorahub.sdk.distribution import PullResult, PushResult
    from lorahub.sdk.exporting import ConvertResult, Dtype, ExportResult
    from lorahub.sdk.generating import GenerateResult
    from lorahub.sdk.library import ScanResult
    from lorahub.sdk.lineage import Child, LineageNode
    from lorahub.sdk.locating import LibraryEntry
    from lorahub.sdk.merging import MergeResult
    from lorahub.sdk.oms import OmsSignature
    from lorahub.sdk.team import TeamPushReport, TeamStatus
    from lorahub.sdk.verifying import VerifyReport
    from lorahub.signing.keys import Identity, KeyStore, Signer
    from lorahub.signing.signed import SignedCard
    from lorahub.signing.trust import KeyRecord, TrustLookup

__all__ = ["PASSPHRASE_ENV", "Hub", "IdentityView", "event_dict", "summary"]

PASSPHRASE_ENV = "LORAHUB_PASSPHRASE"


@dataclass(frozen=True)
class IdentityView:
    """An identity of this home as :meth:`Hub.identities` lists it, with whether it signs by default."""

    identity: Identity
    default: bool


class Hub(ProvenanceMixin):
    """A lorahub home. Cheap to open: folders and the schema are created on first use."""

    def __init__(
        self, settings: Settings, *, catalog: Catalog, blobs: BlobStorage, keys: KeyStore, passphrase_env: str
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.blobs = blobs
        self.keys = keys
        self.passphrase_env = passphrase_env

    @classmethod
    def open(cls, home: str | os.PathLike[str] | None = None, *, passphrase_env: str = PASSPHRASE_ENV) -> Hub:
        from lorahub.registry.catalog import Catalog
        from lorahub.registry.db import connect, migrate
        from lorahub.signing.keys import KeyStore

        settings = Settings.resolve(home)
        settings.home.mkdir(parents=True, exist_ok=True)
        engine = connect(settings.database_url)
        migrate(engine)
        ensure_default_policy(settings.policy_path)
        return cls(
            settings,
            catalog=Catalog(engine),
            blobs=open_blob_store(settings),
            keys=KeyStore(settings.keys_dir),
            passphrase_env=passphrase_env,
        )

    def describe(self) -> dict[str, Any]:
        """``lorahub config show``: the resolved settings and where each came from."""
        default = self.keys.default()
        team = self.settings.team
        return {
            "home": str(self.settings.home),
            "team": str(team.path) if team is not None else None,
            "database_url": mask_url(self.settings.database_url),
            "keys": str(self.settings.keys_dir),
            "blobs": self.blobs.location,
            "policy": str(self.settings.policy_path),
            "default_identity": default.user_id if default else None,
            "sources": dict(self.settings.sources),
        }

    # --- identities and trust ---------------------------------------------------------------------------------

    def _passphrase(self, env_var: str | None = None) -> bytes | None:
        value = os.environ.get(env_var or self.passphrase_env)
        return value.encode("utf-8") if value else None

    def create_identity(self, user_id: str, *, passphrase_env: str | None = None) -> Identity:
        passphrase = self._passphrase(passphrase_env) if passphrase_env else None
        if passphrase_env and passphrase is None:
            raise errors.PassphraseError(f"the environment variable {passphrase_env} is empty or not set")
        from lorahub.registry.catalog import KeyRow

        first = self.keys.default() is None
        identity = self.keys.create(user_id, passphrase)
        if first:  # the first identity signs by default; `keys default` changes it
            self.keys.set_default(identity.fingerprint)
        signer = self.keys.signer(identity.fingerprint, passphrase)
        if self.catalog.team_active():  # a new key holds no role: it is recorded, and trusted when an admin grants
            self.catalog.upsert_key(KeyRow(identity.fingerprint, identity.user_id, identity.public_pem, own=True))
        else:
            self.catalog.trust_key(
                identity.fingerprint, identity.user_id, identity.public_pem, own=True, audit=self.audit_actor(signer)
            )
        self.issue_first_certificate(identity, passphrase)
        return identity

    def identities(self) -> list[IdentityView]:
        default = self.keys.default()
        return [IdentityView(i, default is not None and i.fingerprint == default.fingerprint) for i in self.keys.list()]

    def signer(self, ref: str | None = None) -> Signer:
        if ref is None and self.keys.default() is None:
            raise errors.KeyNotFoundError(
                "this home has no identity to sign with",
                hint='Create one: lorahub keys create "Your Name <you@example.com>" (or pass --no-sign to add).',
            )
        return self.keys.signer(ref, self._passphrase())

    def trust_add(self, pem: str, *, name: str | None = None) -> KeyRecord:
        from lorahub.signing.keys import public_key_from_pem

        _, fingerprint = public_key_from_pem(pem)
        self.require("trust")
        self.catalog.trust_key(fingerprint, name or fingerprint[:16], pem, own=False, audit=self.keyless_actor())
        return self.lookup_required(fingerprint)

    def trust_revoke(self, fingerprint: str) -> KeyRecord:
        record = self.lookup_required(self._full_fingerprint(fingerprint))
        self.require("revoke")
        self.catalog.revoke_key(record.fingerprint, audit=self.keyless_actor())
        return self.lookup_required(record.fingerprint)

    def keyless_actor(self) -> Any:
        """Who records a trust change or a pull: the default identity, or, in a verify-only home that has none,
        nobody, in an unsigned event that says so (:data:`~lorahub.registry.audit.KEYLESS_ACTIONS`)."""
        from lorahub.registry.audit import AuditActor

        if self.keys.default() is None:
            return AuditActor("", None, unsigned_reason="a verify-only home: it has no identity to sign with")
        return self.audit_actor()

    def trusted_keys(self) -> list[KeyRecord]:
        return [self._record(row) for row in self.catalog.list_keys()]

    def lookup(self, fingerprint: str) -> KeyRecord | None:
        """The trust state of a key: own keys (in this home's key store) and keys the catalog trusts or revoked."""
        row = self.catalog.get_key(fingerprint)
        if row is None:
            return None
        return self._record(row)

    def lookup_required(self, fingerprint: str) -> KeyRecord:
        record = self.lookup(fingerprint)
        if record is None:
            raise errors.KeyNotFoundError(f"no key with fingerprint {fingerprint}", hint="See `lorahub trust list`.")
        return record

    def _record(self, row: Any) -> KeyRecord:
        from lorahub.signing.trust import KeyRecord

        own = any(i.fingerprint == row.fingerprint for i in self.keys.list())
        revoked = row.revoked_at.isoformat() if hasattr(row.revoked_at, "isoformat") else row.revoked_at
        return KeyRecord(row.fingerprint, row.name, row.public_pem, own, bool(row.trusted) or own, revoked)

    def _full_fingerprint(self, prefix: str) -> str:
        prefix = prefix.lower().removeprefix("sha256:")
        matches = [row.fingerprint for row in self.catalog.list_keys() if row.fingerprint.startswith(prefix)]
        if len(prefix) < 8 or not matches:
            raise errors.KeyNotFoundError(f"no key whose fingerprint starts with {prefix!r}")
        if len(matches) > 1:
            raise errors.AmbiguousKeyError(f"{prefix!r} matches {len(matches)} keys")
        return matches[0]

    def audit_actor(self, signer: Signer | None = None) -> Any:
        """The identity that signs audit events: the given signer, else the default identity."""
        from lorahub.registry.catalog import AuditActor

        signer = signer or self.signer()
        return AuditActor(signer.keyid, signer.sign)

    def require(self, action: str, fingerprint: str | None = None) -> None:
        """Refuse now, before any work or write, an action (an audit action of
        :data:`~lorahub.registry.roles.ACTION_ROLES`) that the acting key (``fingerprint``, default: the default
        identity) may not perform in this catalogue's team: ``RoleRequiredError``. A home without a team may do
        everything. Every write transaction checks again, so this only makes the refusal early and clean."""
        if fingerprint is None:
            default = self.keys.default()
            fingerprint = default.fingerprint if default is not None else ""
        self.catalog.require(fingerprint, action)

    # --- teams ------------------------------------------------------------------------------------------------

    def team_init(
        self, database_url: str, config: str | os.PathLike[str], *, blobs_url: str | None = None
    ) -> TeamStatus:
        """Start a team on ``database_url`` (and ``blobs_url``): this home's default identity becomes its first
        admin, the team config is written to ``config`` and this home points at it (:mod:`lorahub.sdk.team`)."""
        from lorahub.sdk.team import init_team

        return init_team(self, database_url=database_url, blobs_url=blobs_url, config=config)

    @staticmethod
    def team_join(config: str | os.PathLike[str], home: str | os.PathLike[str] | None = None) -> TeamStatus:
        """Point ``home`` at a team's config: its catalogue and blobs from now on; its keys stay its own."""
        from lorahub.sdk.team import join_team

        join_team(home, config)
        hub = Hub.open(home)
        try:
            return hub.team()
        finally:
            hub.catalog.engine.dispose()

    def team(self) -> TeamStatus:
        """The team this home belongs to and every member's role."""
        from lorahub.sdk.team import status

        return status(self)

    def team_grant(
        self, fingerprint: str | None, role: str, *, public_pem: str | None = None, name: str | None = None
    ) -> RoleRow:
        """Grant a role to a member's key, known to the catalogue by ``fingerprint`` or given as ``public_pem``
        (admins only; signed and audited)."""
        from lorahub.sdk.team import grant

        self.require("role-grant")
        return grant(self, fingerprint, role, public_pem=public_pem, name=name)

    def team_revoke(self, fingerprint: str) -> RoleRow:
        """Take a member's role away (admins only; signed and audited)."""
        from lorahub.sdk.team import revoke

        self.require("role-revoke")
        return revoke(self, fingerprint)

    def team_push(self) -> TeamPushReport:
        """Copy the versions this home held before it joined its team (blobs, signed cards, their audit history)
        into the team's catalogue and blob store (contributors and up)."""
        from lorahub.sdk.team import push_home

        return push_home(self)

    # --- moving out -------------------------------------------------------------------------------------------

    def backup(self, out: str | os.PathLike[str], *, with_keys: bool = False) -> BackupResult:
        """Everything the catalogue holds (every table's rows, the files, the policy, with ``with_keys`` the
        identities) to a new folder, or a ``.tar``/``.tar.gz``/``.tgz`` (:mod:`lorahub.sdk.backup`)."""
        from lorahub.sdk.backup import backup

        return backup(self, out, with_keys=with_keys)

    def restore(self, source: str | os.PathLike[str]) -> RestoreResult:
        """Read a backup into this home, whose catalogue must be empty, once it verifies (audit chain, cards,
        keys, blobs); refused with nothing written otherwise (:class:`~lorahub.errors.RestoreRefusedError`)."""
        from lorahub.sdk.backup import restore

        return restore(self, source)

    def policy(self, path: str | os.PathLike[str] | None = None) -> Policy:
        return Policy.load(Path(path) if path else self.settings.policy_path)

    # --- adapters ---------------------------------------------------------------------------------------------

    def add(self, path: str | os.PathLike[str], options: AddOptions | None = None) -> AddResult:
        from lorahub.sdk.adding import AddOptions, add_file

        self.require("add")
        return add_file(self, path, options or AddOptions())

    def add_url(
        self,
        url: str,
        options: AddOptions | None = None,
        *,
        expected_sha256: str | None = None,
        allow_http: bool = False,
        max_bytes: int | None = None,
        on_progress: Callable[[int, int | None], None] | None = None,
    ) -> AddResult:
        """Download into the home's ``downloads/`` (resumable), add, then drop the download: the blob store keeps
        the bytes. An interrupted download is resumed by running the same call again; a download whose add fails
        stays in ``downloads/`` for the user to look at."""
        from lorahub.sdk.adding import AddOptions
        from lorahub.sdk.download import DEFAULT_MAX_BYTES, download

        self.require("add")
        fetched = download(
            url,
            self.settings.home / "downloads",
            expected_sha256=expected_sha256,
            allow_http=allow_http,
            max_bytes=max_bytes if max_bytes is not None else DEFAULT_MAX_BYTES,
            on_progress=on_progress,
        )
        result = self.add(fetched.path, options or AddOptions())
        fetched.path.unlink(missing_ok=True)
        return result

    def add_tree(
        self, root: str | os.PathLike[str], options: AddOptions | None = None, *, progress: Progress | None = None
    ) -> BatchResult:
        from lorahub.sdk.adding import AddOptions
        from lorahub.sdk.batch import add_tree

        self.require("add")
        return add_tree(self, Path(root), options or AddOptions(), progress=progress)

    def verify(self, target: str | os.PathLike[str], *, policy: str | os.PathLike[str] | None = None) -> VerifyReport:
        from lorahub.sdk.verifying import verify

        return self._logged(verify(self, target, self.policy(policy)))

    @staticmethod
    def verify_with_key(
        path: str | os.PathLike[str], public_pem: str, *, policy: str | os.PathLike[str] | None = None
    ) -> VerifyReport:
        """``verify FILE --key PEM``: the file and the card it carries against that one public key, under the
        built-in policy or ``policy``. A static method: no home is opened, read or written."""
        from lorahub.sdk.verifying import verify_with_key

        return verify_with_key(Path(path), public_pem, Policy.load(Path(policy)) if policy else Policy())

    def verify_oms(
        self,
        target: str | os.PathLike[str],
        bundle: str | os.PathLike[str],
        *,
        policy: str | os.PathLike[str] | None = None,
    ) -> VerifyReport:
        """``verify FILE|NAME[@V] --oms-bundle SIG``: an OpenSSF model-signing bundle (``model_signing sign key``,
        ``lorahub sign --oms``) checked against the keys this home knows, its signer against the home's trust and
        the policy's ``trusted_signers``, and the file against the digest it signs (:mod:`lorahub.sdk.oms`)."""
        from lorahub.sdk.oms import verify_with_home

        return self._logged(verify_with_home(self, target, bundle, self.policy(policy)))

    @staticmethod
    def verify_oms_with_key(
        path: str | os.PathLike[str],
        bundle: str | os.PathLike[str],
        public_pem: str,
        *,
        policy: str | os.PathLike[str] | None = None,
    ) -> VerifyReport:
        """``verify FILE --oms-bundle SIG --key PEM``: the bundle and the file against that one P-256 public key,
        as ``model_signing verify key`` checks them (``policy``: its ``trusted_signers`` may still refuse the key).
        A static method: no home is opened, read or written."""
        from lorahub.sdk.oms import verify_with_key

        return verify_with_key(Path(path), bundle, public_pem, Policy.load(Path(policy)) if policy else Policy())

    def verify_version(
        self, version: AdapterVersion, *, policy: Policy | None = None, reread: bool = False
    ) -> VerifyReport:
        """``verify`` of a catalogued version that reads its file only when its stat facts changed since it last
        passed, or always with ``reread`` (:func:`~lorahub.sdk.verifying.verify_catalogued`). Unlike
        :meth:`verify`, whose target may be a path, this checks the version's own file whatever files lie about."""
        from lorahub.sdk.verifying import verify_catalogued

        return self._logged(verify_catalogued(self, version, policy or self.policy(), reread=reread))

    def verify_all(self, *, policy: str | os.PathLike[str] | None = None) -> Iterator[VerifyReport]:
        """``verify --all``: every active version of the catalogue, wherever its file lies, one report at a time
        (a page of versions in memory). Files are read only when their stat facts differ from a passing
        verification's; the keys' trust is read once, as it stands when the run starts."""
        from lorahub.sdk.verifying import verify_catalogued
        from lorahub.signing.trust import StaticTrust

        resolved, trust = self.policy(policy), StaticTrust(self.trusted_keys())
        for page in self.catalog.version_pages():
            for version in page:
                yield self._logged(verify_catalogued(self, version, resolved, trust=trust))

    def _logged(self, report: VerifyReport) -> VerifyReport:
        if not report.ok:
            failed = [c.name for c in report.checks if not c.ok]
            self._log_quietly("verify-failed", report.content_digest, {"target": report.target, "failed": failed})
        return report

    # --- the library in place -----------------------------------------------------------------------------------

    def scan(
        self,
        roots: Sequence[str | os.PathLike[str]],
        options: AddOptions | None = None,
        *,
        tools: Sequence[tuple[str, str | os.PathLike[str]]] = (),
        find_missing: bool = True,
        link: bool = False,
        progress: Progress | None = None,
    ) -> ScanResult:
        """Catalogue the adapter files under ``roots`` and the LoRA folders of each ``(tool, install root)`` in
        ``tools`` where they lie (nothing is copied or written there) and, with ``find_missing``, find what moved,
        changed or vanished under them since the last scan."""
        from lorahub.sdk.adding import AddOptions
        from lorahub.sdk.library import scan

        self.require("add")
        folders = [*roots, *(folder for tool, root in tools for folder in self.tool_folders(tool, root))]
        if not folders:
            raise errors.MissingArgumentError(
                "name at least one folder to scan",
                hint="lorahub scan ~/loras, or lorahub scan --tool comfyui ~/ComfyUI",
            )
        return scan(self, folders, options or AddOptions(), find_missing=find_missing, link=link, progress=progress)

    def tool_folders(self, tool: str, root: str | os.PathLike[str]) -> list[Path]:
        """The folders the LoRA tool ``tool`` (a1111, forge, comfyui, invokeai) installed at ``root`` reads."""
        from lorahub.files.tools import lora_folders

        return lora_folders(tool, Path(root))

    def library(self, *, state: str | None = None) -> list[LibraryEntry]:
        """The library's locations (``state``: ``missing`` or ``changed`` for those only), by path."""
        from lorahub.sdk.locating import locations

        return locations(self, state=state)

    def duplicates(self) -> list[list[LibraryEntry]]:
        """Groups of library locations that hold the same content (same tensors) at several paths or names."""
        from lorahub.sdk.locating import duplicates

        return duplicates(self)

    def _log_quietly(self, action: str, digest: str | None, details: dict[str, Any]) -> None:
        """Audit an event of something done outside the catalog without asking for a passphrase: signed by the
        default identity when its key is usable, else appended unsigned with the reason (a locked or unreadable
        key, no default identity). The step it records has happened either way, so the event is never dropped."""
        record = self.catalog.find_by_content(digest, include_removed=True) if digest else None
        name, number = (record.name, record.number) if record else (None, None)
        try:
            actor = self.audit_actor()
        except (errors.PassphraseError, errors.KeyFileError, errors.KeyNotFoundError) as error:
            default = self.keys.default()
            self.catalog.log_unsigned(
                action,
                actor=default.fingerprint if default is not None else "",
                reason=error.message,
                subject_name=name,
                subject_version=number,
                subject_digest=digest,
                details=details,
            )
            return
        self.catalog.log(
            action, audit=actor, subject_name=name, subject_version=number, subject_digest=digest, details=details
        )

    def version(self, ref: str) -> AdapterVersion:
        """A catalogued version by ``name``, ``name@N`` or content digest."""
        from lorahub.sdk.refs import parse_ref

        parsed = parse_ref(ref)
        if parsed.digest is not None:
            found = self.catalog.find_by_content(parsed.digest)
            if found is None:
                raise errors.AdapterNotFoundError(f"no catalogued version has content digest {parsed.digest}")
            return found
        return self.catalog.get(str(parsed.name), parsed.version)

    def signed_card(self, version: AdapterVersion) -> SignedCard:
        from lorahub.signing.dsse import Envelope, EnvelopeSignature
        from lorahub.signing.signed import CARD_PAYLOAD_TYPE, SignedCard

        signatures = tuple(EnvelopeSignature(s.keyid, base64.b64decode(s.sig)) for s in version.signatures)
        return SignedCard.from_envelope(Envelope(version.card_json.encode("utf-8"), CARD_PAYLOAD_TYPE, signatures))

    def list_versions(self, filters: Filters | None = None) -> list[AdapterVersion]:
        versions = self.catalog.list_versions(filters)
        return sorted(versions, key=lambda v: (v.created_at, v.id), reverse=True)

    def search(self, text: str, filters: Filters | None = None, *, limit: int = 50) -> list[AdapterVersion]:
        return self.catalog.search(text, filters, limit=limit)

    def browse(
        self, text: str = "", filters: Filters | None = None, *, limit: int = 50, cursor: str | None = None
    ) -> Page:
        """One page of ``list`` (newest first) or, with ``text``, of ``search``: the versions and the cursors of
        the pages around it, for a caller that shows a large catalogue a page at a time (see
        :mod:`lorahub.sdk.browsing`)."""
        from lorahub.sdk.browsing import browse

        return browse(self, text, filters, limit=limit, cursor=cursor)

    def show(self, ref: str, *, trust: TrustLookup | None = None) -> dict[str, Any]:
        """A version's summary, card, signatures with their trust (asked of ``trust``, a snapshot such as
        :class:`~lorahub.signing.trust.StaticTrust` of :meth:`trusted_keys`, else of this home key by key), audit
        events, files, and the samples its training run rendered up to it."""
        from lorahub.registry.runs import TrainingRuns
        from lorahub.sdk.samples import version_samples
        from lorahub.signing.signed import verify_card

        version = self.version(ref)
        signed = self.signed_card(version)
        checks = verify_card(signed, trust or self).signatures
        events = self.catalog.audit_events(adapter=version.name)
        return {
            **summary(version),
            "file_name": version.file_name,
            "size": version.size,
            "card": signed.card.to_dict(),
            "signatures": [
                {"fingerprint": c.keyid, "name": c.name, "valid": c.valid, "trust": c.trust, "reason": c.reason}
                for c in checks
            ],
            "audit": [event_dict(e) for e in events if e.subject_version in (None, version.number)],
            "stored": self.blobs.exists(version.blob_sha256),
            "locations": [row.as_dict() for row in self.catalog.locations.of_sha256([version.blob_sha256])],
            "samples": version_samples(TrainingRuns(self.catalog.engine), signed.card.training, self.settings.home),
        }

    @overload
    def sign(self, ref: str, *, key: str | None = None, oms: None = None) -> tuple[AdapterVersion, bool]: ...

    @overload
    def sign(self, ref: str, *, key: str | None = None, oms: str | os.PathLike[str]) -> OmsSignature: ...

    def sign(
        self, ref: str, *, key: str | None = None, oms: str | os.PathLike[str] | None = None
    ) -> tuple[AdapterVersion, bool] | OmsSignature:
        """Add this home's signature (the default identity, or ``key``) to a catalogued card: a curator vouching
        for a trainer's card. Returns the version and whether a signature was added (False: that key had signed).

        With ``oms``, write there instead an OpenSSF model-signing bundle over the version's stored file (checked
        first against the catalogue), which ``model_signing verify key`` accepts; the card is left as it is."""
        if oms is not None:
            from lorahub.sdk.oms import sign_version

            self.require("sign-oms", self.signer(key).keyid)
            return sign_version(self, ref, oms, key=key)
        from lorahub.signing.signed import cosign

        version = self.version(ref)
        signer = self.signer(key)
        self.require("sign", signer.keyid)
        signed = cosign(self.signed_card(version), signer)
        new = next(s for s in signed.envelope.signatures if s.keyid == signer.keyid)
        added = self.catalog.add_signature(
            version, signer.keyid, base64.b64encode(new.sig).decode("ascii"), audit=self.audit_actor(signer)
        )
        return version, added

    def remove(self, ref: str) -> list[AdapterVersion]:
        """``name@N`` removes that version; a bare name removes every version of it."""
        from lorahub.sdk.refs import parse_ref

        parsed = parse_ref(ref)
        actor = self.audit_actor()
        self.require("remove", actor.fingerprint)
        if parsed.name is None or parsed.version is not None:
            version = self.version(ref)
            return [self.catalog.remove(version.name, version.number, audit=actor)]
        from lorahub.registry.catalog import Filters

        versions = self.catalog.list_versions(Filters(name=parsed.name))
        if not versions:
            raise errors.AdapterNotFoundError(f"no catalogued adapter named {parsed.name!r}")
        return [self.catalog.remove(v.name, v.number, audit=actor) for v in versions]

    @overload
    def export(
        self,
        ref: str,
        out: str | os.PathLike[str],
        *,
        tool: None = None,
        oms: str | os.PathLike[str] | None = None,
        key: str | None = None,
    ) -> AdapterVersion: ...

    @overload
    def export(
        self,
        ref: str,
        out: str | os.PathLike[str],
        *,
        tool: str,
        weight: float | None = None,
        dtype: Dtype | None = None,
        oms: str | os.PathLike[str] | None = None,
        key: str | None = None,
    ) -> ExportResult: ...

    def export(
        self,
        ref: str,
        out: str | os.PathLike[str],
        *,
        tool: str | None = None,
        weight: float | None = None,
        dtype: Dtype | None = None,
        oms: str | os.PathLike[str] | None = None,
        key: str | None = None,
    ) -> AdapterVersion | ExportResult:
        """The stored file, written to ``out`` with its signed card embedded (verifiable without this home).

        With ``tool`` (a1111, comfyui, hf), ``out`` is a folder that gets the layout and sidecars the tool reads; a
        version in another layout is converted first, and the conversion catalogued (``sdk/exporting.py``).

        With ``oms``, an OpenSSF model-signing bundle over the exported adapter file (the bytes written, card
        included) is written there, signed by ``key`` (default: the default identity); with ``tool`` it is listed
        in the result's files as ``oms``."""
        from lorahub.sdk.oms import sign_file

        signer = self.signer(key) if oms is not None else None  # a locked key fails before anything is written
        if tool is not None:
            from lorahub.sdk.exporting import export_for

            result = export_for(self, ref, out, tool, weight=weight, dtype=dtype)
            if signer is not None and oms is not None:
                result.files["oms"] = sign_file(result.files["adapter"], oms, signer)
            files = sorted(p.name for p in result.files.values())
            self._log_quietly("export", result.version.content_digest, {"out": str(out), "for": tool, "files": files})
            return result
        from lorahub.sdk.locating import version_file
        from lorahub.signing.embed import embed_card

        version = self.version(ref)
        embed_card(version_file(self, version).path, self.signed_card(version), out=Path(out))
        details = {"out": str(out)}
        if signer is not None and oms is not None:
            details["oms"] = str(sign_file(Path(out), oms, signer))
        self._log_quietly("export", version.content_digest, details)
        return version

    def convert(
        self,
        source: str | os.PathLike[str],
        out: str | os.PathLike[str],
        *,
        to: str,
        dtype: Dtype | None = None,
        catalogue: bool | None = None,
        check: bool = True,
        lossy: bool = False,
        rank: int | None = None,
        base: str | os.PathLike[str] | None = None,
    ) -> ConvertResult:
        """Convert a catalogued version (``name``, ``name@N``, digest: read from the verified blob) or a file.

        A catalogued source's output becomes a new signed version converted from it (``catalogue=False`` to skip);
        content already catalogued is reused, not added twice. ``dtype`` re-stores the factors; ``check`` reads the
        output back and compares every module's ΔW; ``lossy`` allows a conversion that must approximate (truncated
        SVD at ``rank``); ``base`` is the base checkpoint that kinds whose ΔW depends on the base weight need (GLoRA,
        OFT, IA3, DoRA)."""
        from lorahub.sdk.exporting import convert

        return convert(
            self, source, out, to=to, dtype=dtype, catalogue=catalogue, check=check, lossy=lossy, rank=rank, base=base
        )

    def repair(
        self,
        source: str | os.PathLike[str],
        out: str | os.PathLike[str],
        *,
        catalogue: bool | None = None,
        check: bool = True,
    ) -> ConvertResult:
        """Copy a catalogued version or a file with its misnamed keys renamed as loaders expect them (the
        ``misnamed-keys`` problem of :func:`lorahub.inspect`); every tensor keeps its bytes and ΔW is checked as for
        a conversion. Refused (:class:`lorahub.errors.RepairRefusedError`) when nothing is misnamed or the intent is
        ambiguous; a catalogued one's output is its next version (``catalogue=False`` to skip)."""
        from lorahub.sdk.exporting import repair

        return repair(self, source, out, catalogue=catalogue, check=check)

    def resize(
        self,
        source: str | os.PathLike[str],
        out: str | os.PathLike[str],
        *,
        rank: int | None = None,
        energy: float | None = None,
        dtype: Dtype | None = None,
        catalogue: bool | None = None,
    ) -> ConvertResult:
        """Resize a catalogued version or a file to ``rank``, or to the smallest rank keeping ``energy`` of each
        layer; a catalogued one's output is its next version, resized from it (``catalogue=False`` to skip)."""
        from lorahub.sdk.exporting import resize

        return resize(self, source, out, rank=rank, energy=energy, dtype=dtype, catalogue=catalogue)

    def gc(self) -> tuple[int, int]:
        """Delete blobs no version needs, safe while others add (:mod:`lorahub.sdk.collecting`), and what dead
        writers left behind; returns (blobs removed, bytes freed)."""
        from lorahub.sdk.collecting import collect

        self.require("gc")

        return collect(self)

    # --- combining, lineage ------------------------------------------------------------------------------------

    def merge(
        self,
        specs: list[str],
        *,
        out: str,
        method: str = "cat",
        rank: int | None = None,
        use: str | None = None,
        accept_uncertain: bool = False,
        dtype: str | None = None,
    ) -> MergeResult:
        """Merge catalogued adapters (``"name[@V][:weight]"``) into a new signed version ``out`` (see merging.py)."""
        from lorahub.sdk.merging import merge

        self.require("merge")
        return merge(
            self, specs, out=out, method=method, rank=rank, use=use,  # type: ignore[arg-type]
            accept_uncertain=accept_uncertain, dtype=dtype,
        )  # fmt: skip

    def generate(
        self,
        base: str | os.PathLike[str],
        prompt: str,
        *,
        out: str | os.PathLike[str],
        negative_prompt: str | None = None,
        seed: int = 0,
        steps: int = 20,
        size: tuple[int, int] | None = None,
        guidance: float | None = None,
        use: str | None = None,
        accept_uncertain: bool = False,
        base_license: str | None = None,
        key: str | None = None,
        pipe: Any = None,
    ) -> GenerateResult:
        """An image from a local pipeline folder and the prompt's ``<lora:…>`` adapters, signed with ``key`` (default:
        the default identity) and written to ``out``. ``size`` is (width, height); ``use`` asks the licence engine
        first; ``pipe`` reuses a pipeline of ``base`` already open."""
        from lorahub.sdk.generating import generate

        return generate(
            self, base, prompt, out=out, negative_prompt=negative_prompt, seed=seed, steps=steps, size=size,
            guidance=guidance, use=use, accept_uncertain=accept_uncertain, base_license=base_license, key=key,
            pipe=pipe,
        )  # fmt: skip

    # --- OCI registries ---------------------------------------------------------------------------------------

    def push(self, ref: str, target: str, *, insecure: bool = False) -> PushResult:
        """Push a version to ``oci://HOST[:PORT]/REPO[:TAG]`` as a ModelPack model with its signed card attached
        (default tags: ``vN``, and ``latest`` for the newest version). ``insecure``: plain HTTP, loopback only."""
        from lorahub.sdk.distribution import push

        return push(self, ref, target, insecure=insecure)

    def pull(self, source: str, *, insecure: bool = False, policy: str | os.PathLike[str] | None = None) -> PullResult:
        """Fetch ``oci://…[:TAG|@DIGEST]``, verify it as ``verify FILE`` would (signatures, trust, policy) and
        catalogue it under the card it came with; raises :class:`~lorahub.errors.PullRefusedError`, having
        written nothing, when a check fails."""
        from lorahub.sdk.distribution import pull

        self.require("pull")
        return pull(self, source, insecure=insecure, policy=policy)

    def lineage(self, ref: str, *, trust: TrustLookup | None = None) -> LineageNode:
        """The tree of a version's parents; each card's signers judged by ``trust`` (a snapshot read once, for a
        caller drawing many nodes), else by this home key by key."""
        from lorahub.sdk.lineage import lineage

        return lineage(self, ref, trust=trust)

    def children(self, ref: str) -> list[Child]:
        """The catalogued versions whose cards name this one as a parent (merged, converted, resized, trained from
        it), with the relation; a caller asking often keeps a :class:`~lorahub.sdk.lineage.ChildIndex` instead."""
        from lorahub.sdk.lineage import ChildIndex

        return ChildIndex(self).children(self.version(ref).content_digest)

    def cyclonedx_bom(self, ref: str) -> dict[str, Any]:
        """The CycloneDX 1.6 ML-BOM of a version and its whole lineage, as JSON data: the adapter with hashes and
        licences, its parents as pedigree ancestors, the base model, the datasets with their consent, the signers
        as this home sees them (see :mod:`lorahub.sdk.bom`; :func:`lorahub.sdk.bom.write_json` writes it)."""
        from lorahub.sdk.bom import cyclonedx_bom

        return cyclonedx_bom(self, ref)

    # --- licences ---------------------------------------------------------------------------------------------

    def license_check(
        self,
        items: list[str],
        *,
        licenses: list[str] | None = None,
        base_license: str | None = None,
        merge: bool = False,
        use: str | None = None,
        subject: str = "outputs",
    ) -> Verdict:
        """May these adapters (catalogued names or bare licence ids) be used on ``base_license``, merged, or used
        for ``use``? What merge, stack, load and generate ask before they act. With no adapter, ``base_license``
        and ``use`` ask the commonest question: may this base's outputs (or the model itself) be used so?"""
        from lorahub import licenses as engine

        parts = [t for item in items for t in self._license_terms(item)] + [engine.terms_for(i) for i in licenses or []]
        if not parts and (base_license is None or use is None):
            raise errors.MissingArgumentError(
                "name an adapter or licence, or ask about a base alone with --base-license and --use",
                hint="e.g. lorahub license check pixel-art --use commercial, or "
                "lorahub license check --base-license flux-1-dev-non-commercial-license --use commercial",
            )
        base = engine.terms_for(base_license) if base_license else None
        if use is not None:
            return engine.use(parts, base, use, subject=subject)  # type: ignore[arg-type]
        if merge or len(parts) > 1:
            return engine.merge(parts, base)
        return engine.effective(parts[0], base)

    def license_answers(self, ref: str, questions: Sequence[tuple[str, str]]) -> list[Verdict]:
        """:meth:`license_check` of one catalogued version for each ``(use, subject)`` question, its card read once
        (an adapter page asks several)."""
        from lorahub import licenses as engine

        parts = engine.from_card_licenses(self.signed_card(self.version(ref)).card.license)
        return [engine.use(parts, None, use, subject=subject) for use, subject in questions]  # type: ignore[arg-type]

    def _license_terms(self, item: str) -> list[LicenseTerms]:
        """A catalogued adapter's card licences (with its Civitai-style permissions; a merge names several), else a
        licence id or alias."""
        from lorahub import licenses as engine

        try:
            version = self.version(item)
        except errors.LorahubError:
            return [engine.terms_for(item)]
        return engine.from_card_licenses(self.signed_card(version).card.license)

    # --- baking -----------------------------------------------------------------------------------------------

    def bake(
        self,
        base: str | os.PathLike[str],
        specs: list[str],
        out: str | os.PathLike[str],
        *,
        use: str | None = None,
        base_license: str | None = None,
        accept_uncertain: bool = False,
        components: list[str] | None = None,
    ) -> BakeResult:
        """Bake ``specs`` (``NAME[@V][:W]``) into ``base``, written to ``out``: licence check first, verified blobs,
        streaming merge, audit event (see :mod:`lorahub.sdk.baking`). ``base`` is a checkpoint file (``out`` is then
        a file), or a diffusers pipeline: a folder, a Hugging Face cache snapshot or a repo id ``ORG/NAME[@REV]``
        found in the local cache (``out`` is then a new pipeline folder, which must not exist or be empty)."""
        from lorahub.sdk.baking import bake

        self.require("bake")
        return bake(
            self,
            base,
            specs,
            out,
            use=use,
            base_license=base_license,
            accept_uncertain=accept_uncertain,
            components=components,
        )

    # --- audit ------------------------------------------------------------------------------------------------

    def audit(
        self,
        *,
        who: str | None = None,
        adapter: str | None = None,
        action: str | None = None,
        since: datetime | str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """The audit log, oldest first, as JSON-ready dicts; each filter narrows it: ``who`` (a key fingerprint
        prefix), ``adapter`` (a name: its own events and the images made with it), ``action`` (``add``,
        ``generate``…), ``since`` (a time or ISO-8601 text); ``limit`` keeps the newest N."""
        events = self.catalog.audit_events(who=who, adapter=adapter, action=action, since=since, limit=limit)
        return [event_dict(e) for e in events]

    def verify_audit(self) -> list[dict[str, Any]]:
        from lorahub.signing.keys import verify_signature

        problems = self.catalog.verify_audit(verify=verify_signature)
        return [{"seq": p.seq, "kind": p.kind, "detail": p.detail} for p in problems]

    def unsigned_audit_events(self) -> list[dict[str, Any]]:
        """Events appended unsigned because their actor could not sign, each with why: an intact chain proves their
        place, not their author, so ``audit --verify`` lists them."""
        from lorahub.registry.audit import unsigned_reason

        return [
            event_dict(event) | {"unsigned": reason}
            for event in self.catalog.audit_events()
            if (reason := unsigned_reason(event)) is not None
        ]

"""``lorahub verify``: a checklist a CI pipeline can gate on.

Each check is named, passes or fails, and says why; checks that cannot run because an earlier one failed are
reported as failed with the reason, never silently skipped. Nothing here trusts the file: the digests are
recomputed, the card's claims compared with them, the signatures checked against the trust store.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorahub import errors
from lorahub.files.safetensors import check_path

if TYPE_CHECKING:
    from lorahub.registry.catalog import AdapterVersion
    from lorahub.sdk.hub import Hub
    from lorahub.sdk.inspect import Report
    from lorahub.sdk.policy import Policy
    from lorahub.signing.signed import SignedCard
    from lorahub.signing.trust import TrustLookup


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class VerifyReport:
    """The answer of :meth:`Hub.verify`: every check (bytes, card, signatures, trust, home policy) with its
    detail, so a refusal says which one failed; ``ok`` is true only when there were checks and all passed."""

    target: str
    path: str
    checks: list[Check] = field(default_factory=list)
    content_digest: str | None = None
    signers: list[dict[str, Any]] = field(default_factory=list)
    card_source: str | None = None
    policy: str | None = None

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def add(self, name: str, ok: bool, detail: str) -> bool:
        self.checks.append(Check(name, ok, detail))
        return ok

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "target": self.target,
            "path": self.path,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
            "content_digest": self.content_digest,
            "signers": self.signers,
            "card_source": self.card_source,
            "policy": self.policy,
        }


def verify(
    hub: Hub, target: str | os.PathLike[str], policy: Policy, *, trust: TrustLookup | None = None
) -> VerifyReport:
    """The checklist for a file or a catalogued version. ``trust`` answers for the signers' keys (default: the
    home, asked each time; ``verify --all`` passes one snapshot for the whole run)."""
    try:
        path, catalogued = _resolve(hub, target)
    except errors.BlobDamagedError as error:
        return _unread(str(target), None, policy, "blob integrity", error.message)
    return _checklist(path, str(target), policy, trust or hub, hub=hub, catalogued=catalogued)


def _unread(target: str, digest: str | None, policy: Policy, check: str, detail: str) -> VerifyReport:
    """The report on a catalogued version whose bytes could not be had: missing, or damaged in a remote store."""
    report = VerifyReport(target=target, path="", policy=policy.source)
    report.content_digest = digest
    report.add(check, False, detail)
    return report


def verify_with_key(path: Path, public_pem: str, policy: Policy) -> VerifyReport:
    """``lorahub verify FILE --key PEM``: the file and the card it carries (embedded or sidecar) against that one
    key, trusted for this check alone. No home is opened, so nothing is read from one or written to one."""
    from lorahub.signing.keys import public_key_from_pem
    from lorahub.signing.trust import KeyRecord, StaticTrust

    _, fingerprint = public_key_from_pem(public_pem)
    trust = StaticTrust([KeyRecord(fingerprint, "--key", public_pem, own=False, trusted=True)])
    return _checklist(check_path(path), str(path), policy, trust, hub=None, catalogued=None)


def _checklist(
    path: Path, target: str, policy: Policy, trust: TrustLookup, *, hub: Hub | None, catalogued: Any
) -> VerifyReport:
    """Every check in order; without a ``hub`` the card must travel with the file and no catalogue is asked."""
    report = VerifyReport(target=target, path=str(path), policy=policy.source)
    inspected = _container(report, path)
    if inspected is None:
        return report
    _format(report, inspected, policy)
    report.content_digest = inspected.hashes.content
    report.add("content digest", True, f"recomputed: {inspected.hashes.content}")
    if hub is not None and catalogued is not None:
        where = "stored file" if path == hub.blobs.local_path(catalogued.blob_sha256) else f"in-place file {path}"
        report.add(
            "blob integrity",
            catalogued.blob_sha256 == inspected.hashes.sha256,
            f"{where} sha256 {inspected.hashes.sha256[:16]}… (catalogue says {catalogued.blob_sha256[:16]}…)",
        )
    signed = _card(hub, report, path, inspected, catalogued)
    if signed is None:
        _policy(report, None, policy)
        return report
    _signatures(trust, report, signed, policy)
    report.add(
        "card matches file",
        signed.card.content_digest == inspected.hashes.content,
        f"card names content {signed.card.content_digest[:16]}…, file has {str(inspected.hashes.content)[:16]}…",
    )
    if hub is not None:
        _catalogue_agreement(hub, report, signed, inspected)
    _policy(report, signed, policy)
    return report


def _resolve(hub: Hub, target: str | os.PathLike[str]) -> tuple[Path, Any]:
    """A path on disk, or a catalogue reference resolved to its stored blob."""
    from lorahub.sdk.refs import is_catalogue_ref

    path = Path(target)
    if not is_catalogue_ref(target):
        return path, None
    from lorahub.sdk.locating import version_file

    version = hub.version(str(target))
    return version_file(hub, version).path, version


def _container(report: VerifyReport, path: Path) -> Report | None:
    from lorahub.sdk.inspect import inspect

    try:
        inspected = inspect(path)
    except errors.LorahubError as error:
        report.add("container", False, f"{error.code}: {error.message}")
        return None
    if inspected.container != "safetensors":
        report.add("container", False, f"a pickled file ({inspected.container}): only safetensors can be verified")
        return None
    fatal = [p for p in inspected.problems if p.code in ("non-finite", "unreferenced-bytes", "structure")]
    detail = "; ".join(p.message for p in fatal) or f"valid safetensors, {inspected.tensors} tensors"
    report.add("container", not fatal, detail)
    return inspected


NAMING_PROBLEMS = ("misnamed-keys", "nothing-loadable")
"""Problems that mean a loader would skip what the file holds: they fail the format check whatever the policy's
``max_unknown_keys``, because such a file "loads and does nothing"."""


def _format(report: VerifyReport, inspected: Report, policy: Policy) -> None:
    unknown = len(inspected.unmatched_keys)
    naming = [p for p in inspected.problems if p.code in NAMING_PROBLEMS]
    ok = inspected.format != "unknown" and unknown <= policy.max_unknown_keys and not naming
    detail = f"{inspected.format}, {unknown} unknown key(s) (policy allows {policy.max_unknown_keys})"
    detail += "".join(f"; {p.code}: {p.message}" for p in naming)
    report.add("format", ok, detail)


def _card(hub: Hub | None, report: VerifyReport, path: Path, inspected: Report, catalogued: Any) -> SignedCard | None:
    from lorahub.signing.embed import read_embedded, read_sidecar

    try:
        signed, source = read_embedded(inspected.raw_metadata), "embedded"
        if signed is None:
            signed, source = read_sidecar(path), "sidecar"
    except errors.CardError as error:
        report.add("card present", False, f"the card in the file is damaged: {error.message}")
        return None
    if signed is None and hub is not None:
        record = catalogued or hub.catalog.find_by_content(inspected.hashes.content or "")
        if record is not None:
            signed, source = hub.signed_card(record), "catalogue"
    if signed is None:
        where = ", and the content is not catalogued" if hub is not None else " (with --key the card travels with it)"
        report.add("card present", False, f"no card embedded, no sidecar{where}")
        return None
    report.card_source = source
    report.add("card present", True, f"{source}: {signed.card.name}@{signed.card.version}")
    return signed


def _signatures(trust: TrustLookup, report: VerifyReport, signed: SignedCard, policy: Policy) -> None:
    """Every signature by a known key must verify; one by a key this home has never seen cannot be checked, and is
    listed rather than failed (a co-signer the verifier does not know is not tampering)."""
    from lorahub.signing.signed import verify_card

    verification = verify_card(signed, trust)
    report.signers = [
        {"fingerprint": s.keyid, "name": s.name, "valid": s.valid, "trust": s.trust, "reason": s.reason}
        for s in verification.signatures
    ]
    checks = verification.signatures
    unknown = [c for c in checks if c.trust == "unknown" and not c.valid]
    invalid = [c for c in checks if not c.valid and c not in unknown]
    checkable = len(checks) - len(unknown)
    detail = f"{checkable - len(invalid)} of {checkable} checkable valid"
    detail += "".join(f"; {c.keyid[:16]}…: {c.reason}" for c in invalid)
    if unknown:
        detail += f"; {len(unknown)} by unknown key(s), not checkable: " + ", ".join(c.keyid[:16] for c in unknown)
    report.add("signatures valid", checkable > 0 and not invalid, detail)
    trusted = [
        fp
        for fp in verification.trusted_signers
        if not policy.trusted_signers or any(fp.startswith(p.lower()) for p in policy.trusted_signers)
    ]
    states = ", ".join(f"{c.keyid[:16]}… {c.trust}" for c in checks) or "unsigned"
    report.add("signer trusted", bool(trusted) or not policy.require_signature, states)


def _catalogue_agreement(hub: Hub, report: VerifyReport, signed: SignedCard, inspected: Report) -> None:
    record = hub.catalog.find_by_content(inspected.hashes.content or "", include_removed=True)
    if record is None:
        report.add("catalogue", True, "not catalogued in this home")
        return
    if record.removed_at is not None:
        report.add("catalogue", False, f"catalogued as {record.name}@{record.number}, removed {record.removed_at}")
        return
    same = hub.signed_card(record).card == signed.card
    report.add("catalogue", same, f"{record.name}@{record.number}: " + ("same card" if same else "a different card"))


def _policy(report: VerifyReport, signed: SignedCard | None, policy: Policy) -> None:
    failures = []
    card = signed.card if signed else None
    license_id = card.license.id if card else "unknown"
    if policy.require_license and license_id == "unknown":
        failures.append("no licence named")
    if license_id in policy.forbidden_licenses:
        failures.append(f"licence {license_id} is forbidden")
    if policy.require_known_consent and (card is None or card.consent.status == "unknown"):
        failures.append("dataset consent unknown")
    if policy.forbid_opted_out and card is not None and card.consent.status == "opted-out":
        failures.append("the dataset includes items whose owners opted out")
    if policy.require_signature and signed is None:
        failures.append("unsigned")
    report.add("policy", not failures, "; ".join(failures) or f"passes {policy.source}")


def verify_catalogued(
    hub: Hub, version: AdapterVersion, policy: Policy, *, trust: TrustLookup | None = None, reread: bool = False
) -> VerifyReport:
    """``verify NAME@V``, without reading the file again when its size, mtime and inode still match a recorded
    passing verification (``verify --all`` over a library that did not change reads nothing), unless ``reread``.
    A file that is nowhere fails the ``file present`` check; an in-place file whose bytes changed is marked
    ``changed``. The version's own file is checked, never a path that happens to be spelt like its reference."""
    from lorahub.sdk.locating import version_file

    try:
        located = version_file(hub, version)
    except errors.FileMissingError as error:
        return _unread(version.ref, version.content_digest, policy, "file present", error.message)
    except errors.BlobDamagedError as error:
        return _unread(version.ref, version.content_digest, policy, "blob integrity", error.message)
    stat = located.path.stat()
    facts = (str(located.path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    cached = hub.catalog.file_cache_get(*facts)
    unchanged = cached is not None and (cached.sha256, cached.content_digest) == (
        version.blob_sha256,
        version.content_digest,
    )
    if unchanged and not reread:
        return verify_unchanged_blob(hub, version, policy, located.path, trust=trust)
    report = _checklist(located.path, version.ref, policy, trust or hub, hub=hub, catalogued=version)
    if report.ok:
        hub.catalog.file_cache_put(*facts, sha256=version.blob_sha256, content_digest=version.content_digest)
    elif located.location is not None and any(c.name == "blob integrity" and not c.ok for c in report.checks):
        hub.catalog.locations.set_state([located.location.id], "changed")
    return report


def verify_unchanged_blob(
    hub: Hub, version: AdapterVersion, policy: Policy, path: Path, *, trust: TrustLookup | None = None
) -> VerifyReport:
    """``verify`` for a catalogued file whose size, mtime and inode still match a recorded full verification: the
    bytes are not read again (a changed file changes the stat facts); the card, its signatures, trust and policy
    are checked as always, because trust and policy can change at any time."""
    report = VerifyReport(target=version.ref, path=str(path), policy=policy.source)
    report.content_digest = version.content_digest
    report.add("blob integrity", True, f"unchanged since verified (sha256 {version.blob_sha256[:16]}…)")
    signed = hub.signed_card(version)
    report.card_source = "catalogue"
    report.add("card present", True, f"catalogue: {signed.card.name}@{signed.card.version}")
    _signatures(trust or hub, report, signed, policy)
    report.add(
        "card matches file",
        signed.card.content_digest == version.content_digest,
        f"card names content {signed.card.content_digest[:16]}…",
    )
    _policy(report, signed, policy)
    return report

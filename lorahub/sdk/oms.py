"""OpenSSF model signing with a home: bundles for catalogued and exported files, and checking a file against a
bundle with the home's trust (or one key, with no home).

The bundle format lives in :mod:`lorahub.signing.oms`; here the home decides which file is signed (the verified
stored bytes, or the bytes just exported), who signs (an identity of the home), what is audited, and how a check
reads as a ``verify`` checklist: **signature valid**, **signer trusted**, **file matches**, the failing ones with
their reason, so the CLI renders and gates on it exactly as it does for a card.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorahub import errors

if TYPE_CHECKING:
    from lorahub.registry.catalog import AdapterVersion
    from lorahub.sdk.hub import Hub
    from lorahub.sdk.policy import Policy
    from lorahub.sdk.verifying import VerifyReport
    from lorahub.signing.keys import Signer
    from lorahub.signing.oms import OmsCheck
    from lorahub.signing.trust import KeyRecord

BUNDLE_MODE = 0o644
"""A signature is public: anyone who gets the model should be able to read it."""


@dataclass(frozen=True)
class OmsSignature:
    """A model-signing bundle written for a catalogued version: where, for which file, by whom."""

    version: AdapterVersion
    bundle: Path
    model_name: str
    sha256: str
    signer: str
    signer_name: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "ref": self.version.ref,
            "bundle": str(self.bundle),
            "model_name": self.model_name,
            "sha256": self.sha256,
            "signer": {"fingerprint": self.signer, "name": self.signer_name},
        }


# --- signing ---------------------------------------------------------------------------------------------------


def sign_version(hub: Hub, ref: str, out: str | os.PathLike[str], *, key: str | None = None) -> OmsSignature:
    """``lorahub sign REF --oms OUT``: a bundle over the version's stored bytes (the blob store's, or the library
    file's), after checking they are the catalogued ones and its card's known signatures hold, as an export does:
    a signature must never vouch for bytes that changed since they were catalogued. The card is not touched."""
    from lorahub.sdk.exporting import verified_blob
    from lorahub.signing.oms import oms_bundle_for_digest

    version = hub.version(ref)
    signer = hub.signer(key)
    verified_blob(hub, version)  # one read: the sha256 it checks is the one the bundle signs
    model_name = version.file_name or f"{version.name}.safetensors"
    bundle = write_bundle(out, oms_bundle_for_digest(version.blob_sha256, signer, name=model_name))
    hub.catalog.log(
        "sign-oms",
        audit=hub.audit_actor(signer),
        subject_name=version.name,
        subject_version=version.number,
        subject_digest=version.content_digest,
        details={"bundle": str(bundle), "sha256": version.blob_sha256},
    )
    return OmsSignature(version, bundle, model_name, version.blob_sha256, signer.keyid, signer.identity.user_id)


def sign_file(path: Path, out: str | os.PathLike[str], signer: Signer) -> Path:
    """A bundle for a file lorahub has just written (an export, whose bytes embed the card): the bundle signs those
    exact bytes, under the file's own name."""
    from lorahub.signing.oms import oms_bundle

    return write_bundle(out, oms_bundle(path, signer))


def write_bundle(out: str | os.PathLike[str], data: bytes) -> Path:
    from lorahub.files.atomic import atomic_write

    target = Path(out)
    if target.is_dir():
        raise errors.NotAFileError(
            f"{target} is a directory; the bundle is one file", hint="Name the file to write, e.g. model.sig."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, [data], mode=BUNDLE_MODE)
    return target


# --- verifying -------------------------------------------------------------------------------------------------


def verify_with_home(
    hub: Hub, target: str | os.PathLike[str], bundle: str | os.PathLike[str], policy: Policy
) -> VerifyReport:
    """``lorahub verify FILE|NAME[@V] --oms-bundle SIG``: the bundle against every key the home knows, its signer
    judged by the home's trust (own or trusted, not revoked; the policy's ``trusted_signers``)."""
    from lorahub.sdk.refs import is_catalogue_ref

    path = Path(target)
    if is_catalogue_ref(target):
        from lorahub.sdk.locating import version_file

        path = version_file(hub, hub.version(str(target))).path
    records = hub.trusted_keys()
    return _report(str(target), path, _read(bundle), records, policy)


def verify_with_key(path: Path, bundle: str | os.PathLike[str], public_pem: str, policy: Policy) -> VerifyReport:
    """``lorahub verify FILE --oms-bundle SIG --key PEM``: that one key, trusted for this check alone; no home."""
    from lorahub.signing.keys import public_key_from_pem
    from lorahub.signing.trust import KeyRecord

    _, fingerprint = public_key_from_pem(public_pem)
    record = KeyRecord(fingerprint, "--key", public_pem, own=False, trusted=True)
    return _report(str(path), path, _read(bundle), [record], policy)


def _read(bundle: str | os.PathLike[str]) -> bytes:
    from lorahub.files.safetensors import check_path

    source = check_path(bundle)
    try:
        return source.read_bytes()
    except OSError as exc:
        raise errors.FileReadError(f"{source}: {exc.strerror or exc}") from None


def _report(target: str, path: Path, bundle: bytes, records: list[KeyRecord], policy: Policy) -> VerifyReport:
    from lorahub.files.safetensors import check_path
    from lorahub.sdk.verifying import VerifyReport
    from lorahub.signing.oms import verify_oms_bundle

    if path.is_dir():
        raise errors.NotAFileError(
            f"{path} is a folder; lorahub checks a bundle against one file",
            hint="Check a folder model with `model_signing verify key FOLDER --signature SIG --public_key KEY.pem`.",
        )
    checked = check_path(path)
    check = verify_oms_bundle(checked, bundle, {r.fingerprint: r.public_pem for r in records})
    report = VerifyReport(target=target, path=str(checked), policy=policy.source)
    signer = next((r for r in records if r.fingerprint == check.signer), None)
    _signature(report, check, signer)
    _trust(report, signer, policy)
    _file(report, check)
    return report


def _signature(report: VerifyReport, check: OmsCheck, signer: KeyRecord | None) -> None:
    if signer is None:
        report.add("signature valid", False, check.reason)
        report.signers = [
            {"fingerprint": None, "name": None, "valid": False, "trust": "unknown", "reason": check.reason}
        ]
        return
    detail = f"valid signature by {signer.name} ({signer.fingerprint[:16]}…)"
    report.add("signature valid", True, detail)
    report.signers = [
        {"fingerprint": signer.fingerprint, "name": signer.name, "valid": True, "trust": signer.state, "reason": detail}
    ]


def _trust(report: VerifyReport, signer: KeyRecord | None, policy: Policy) -> None:
    if signer is None:
        hint = "add the signer's public key with `lorahub trust add KEY.pem`, or check with --key KEY.pem"
        report.add("signer trusted", False, f"no signer this home knows: {hint}")
        return
    listed = not policy.trusted_signers or any(signer.fingerprint.startswith(p.lower()) for p in policy.trusted_signers)
    trusted = signer.state in ("own", "trusted") and listed
    detail = f"{signer.fingerprint[:16]}… {signer.state}"
    if signer.state in ("own", "trusted") and not listed:
        detail += f", not among the policy's trusted_signers ({policy.source})"
    report.add("signer trusted", trusted, detail)


def _file(report: VerifyReport, check: OmsCheck) -> None:
    if not check.signature_valid:
        report.add("file matches", False, "not checked: the bundle's signature did not verify")
        return
    report.add("file matches", check.ok, f"model {check.model_name!r}: {check.reason}")

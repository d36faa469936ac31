"""Backup and restore: everything a home's catalogue holds, in a folder or a tarball, read back only once verified.

A backup (``lorahub.backup/v1``) is a folder, or a ``.tar``/``.tar.gz``/``.tgz`` of one::

    manifest.json             format, time, lorahub version, rows per table, the audit chain's head, blobs not held
    catalog/TABLE.jsonl       every row of each table of :data:`~lorahub.registry.snapshot.SNAPSHOT_TABLES`
    blobs/sha256/ab/SHA256    the files, from the blob store or, for files catalogued in place, from where they lie
    policy.toml               the home's verify policy
    keys/                     the home's identities (private keys), only when asked for (``with_keys``)

The rows are read in one snapshot (one transaction; ``REPEATABLE READ`` on PostgreSQL), so the versions and the
audit chain agree with each other. ``restore`` first loads the rows into a scratch SQLite catalogue and checks
everything there: the audit chain (links, signatures, the head the manifest names, the roles), each card (it parses,
names the version's content digest, and every signature by a key the backup holds verifies), each key (its
fingerprint is its PEM's), each blob (its bytes hash to its name, its size is the catalogued one, no catalogued
blob is absent unless the manifest says it was not held). Only then, and only into a home whose catalogue is still
empty, does it write: blobs first, then every row in one transaction, so a failure leaves nothing but unreferenced
blobs that ``gc`` removes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from lorahub import errors
from lorahub.version import __version__

if TYPE_CHECKING:
    from lorahub.registry.catalog import AdapterVersion, Catalog
    from lorahub.sdk.hub import Hub

FORMAT: Final = "lorahub.backup/v1"
MANIFEST: Final = "manifest.json"
TARBALL_SUFFIXES: Final = (".tar", ".tar.gz", ".tgz")
CHUNK: Final = 1 << 20
MAX_PROBLEMS_SHOWN: Final = 5


@dataclass(frozen=True)
class BackupResult:
    """What ``backup`` wrote: rows per table, the files copied (and their bytes), the blobs the home held no intact
    copy of (their rows are kept, as in the home), and whether the identities went along."""

    out: Path
    rows: dict[str, int]
    blobs: int
    blob_bytes: int
    missing_blobs: tuple[str, ...]
    keys: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "rows": self.rows,
            "blobs": self.blobs,
            "blob_bytes": self.blob_bytes,
            "missing_blobs": list(self.missing_blobs),
            "keys": self.keys,
        }


@dataclass(frozen=True)
class RestoreResult:
    """What ``restore`` wrote once the backup verified: rows per table, files, and the identity files copied."""

    source: Path
    rows: dict[str, int]
    blobs: int
    keys: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        return {"source": str(self.source), "rows": self.rows, "blobs": self.blobs, "keys": list(self.keys)}


# --- backup -----------------------------------------------------------------------------------------------------


def backup(hub: Hub, out: str | os.PathLike[str], *, with_keys: bool = False) -> BackupResult:
    """Write everything the home's catalogue holds to ``out`` (a new folder, or a tarball by its suffix)."""
    target = Path(out)
    if target.exists() and (target.is_file() or any(target.iterdir())):
        raise errors.InvalidArgumentError(
            f"{target} exists", hint="A backup goes to a new folder or file; move the old one away first."
        )
    tarball = target.name.endswith(TARBALL_SUFFIXES)
    with tempfile.TemporaryDirectory(prefix=".lorahub-backup-", dir=target.parent if tarball else None) as scratch:
        folder = Path(scratch) / "lorahub-backup" if tarball else target.with_name(f".{target.name}.partial")
        if not tarball:
            shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        result = _write_backup(hub, folder, with_keys=with_keys)
        if tarball:
            compressed = target.name.endswith((".gz", ".tgz"))
            with tarfile.open(target, "w:gz") if compressed else tarfile.open(target, "w") as archive:
                archive.add(folder, arcname="lorahub-backup")
        else:
            if target.exists():
                target.rmdir()
            folder.rename(target)
    return BackupResult(target, result.rows, result.blobs, result.blob_bytes, result.missing_blobs, result.keys)


def _write_backup(hub: Hub, folder: Path, *, with_keys: bool) -> BackupResult:
    from lorahub.registry import snapshot

    rows: dict[str, int] = {}
    (folder / "catalog").mkdir()
    with snapshot.reader(hub.catalog.engine) as read:
        for name in snapshot.SNAPSHOT_TABLES:
            with open(folder / "catalog" / f"{name}.jsonl", "w", encoding="utf-8") as lines:
                rows[name] = 0
                for row in read(name):
                    lines.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
                    rows[name] += 1
    blob_rows = list(_read_rows(folder, "blob"))
    copied, size, missing = 0, 0, []
    for row in blob_rows:
        sha256 = row["sha256"]
        if _copy_blob(hub, sha256, folder / "blobs" / "sha256" / sha256[:2] / sha256):
            copied, size = copied + 1, size + int(row["size"])
        else:
            missing.append(sha256)
    if hub.settings.policy_path.is_file():
        shutil.copyfile(hub.settings.policy_path, folder / "policy.toml")
    if with_keys and hub.settings.keys_dir.is_dir():
        shutil.copytree(hub.settings.keys_dir, folder / "keys")
    head = hub.catalog.audit_head() if rows["audit_head"] else None
    manifest = {
        "format": FORMAT,
        "created": datetime.now(UTC).isoformat(),
        "lorahub": __version__,
        "rows": rows,
        "audit_head": list(head) if head is not None else None,
        "missing_blobs": missing,
        "keys": with_keys,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return BackupResult(folder, rows, copied, size, tuple(missing), with_keys)


def _copy_blob(hub: Hub, sha256: str, destination: Path) -> bool:
    """Copy a blob's bytes from the store or from a library location, checking them on the way; False when no
    intact copy is at hand (the version stays catalogued, as it was in the home)."""
    stored = hub.blobs.fetch(sha256)  # a remote store's blob is fetched (and checked) into its local cache
    candidates = [stored] if stored is not None else []
    candidates += [Path(row.path) for row in hub.catalog.locations.of_sha256([sha256]) if row.state == "present"]
    destination.parent.mkdir(parents=True, exist_ok=True)
    for candidate in candidates:
        try:
            if _copy_checked(candidate, destination) == sha256:
                return True
        except OSError:
            continue
    destination.unlink(missing_ok=True)
    return False


def _copy_checked(source: Path, destination: Path) -> str:
    digest = hashlib.sha256()
    with open(source, "rb") as reader, open(destination, "wb") as writer:
        while chunk := reader.read(CHUNK):
            digest.update(chunk)
            writer.write(chunk)
    return digest.hexdigest()


# --- restore ----------------------------------------------------------------------------------------------------


def restore(hub: Hub, source: str | os.PathLike[str]) -> RestoreResult:
    """Read a backup back into this home, whose catalogue must be empty; refused, with nothing written, when the
    backup does not verify (:class:`~lorahub.errors.RestoreRefusedError`)."""
    from lorahub.registry import snapshot

    path = Path(source)
    if not snapshot.is_empty(hub.catalog.engine):
        raise errors.RestoreRefusedError(
            f"this home's catalogue ({hub.settings.home}) already holds versions or audit events",
            hint="Restore into a fresh home: LORAHUB_HOME=NEW-FOLDER lorahub restore BACKUP.",
        )
    with _unpacked(path) as folder:
        manifest = _manifest(folder)
        problems = verify_backup(folder, manifest)
        if problems:
            shown = "; ".join(problems[:MAX_PROBLEMS_SHOWN])
            more = f" (and {len(problems) - MAX_PROBLEMS_SHOWN} more)" if len(problems) > MAX_PROBLEMS_SHOWN else ""
            raise errors.RestoreRefusedError(f"{path} does not verify, nothing was restored: {shown}{more}")
        blobs = 0
        for blob in sorted((folder / "blobs" / "sha256").glob("*/*")):
            hub.blobs.put_file(blob, expected_sha256=blob.name)
            blobs += 1
        rows = snapshot.load(hub.catalog.engine, {name: _read_rows(folder, name) for name in snapshot.SNAPSHOT_TABLES})
        keys = _restore_keys(folder / "keys", hub.settings.keys_dir)
        if (folder / "policy.toml").is_file():
            shutil.copyfile(folder / "policy.toml", hub.settings.policy_path)
    return RestoreResult(path, rows, blobs, keys)


def verify_backup(folder: Path, manifest: dict[str, Any]) -> list[str]:
    """Every reason the backup in ``folder`` cannot be trusted, checked in a scratch catalogue; empty when intact."""
    from lorahub.registry import snapshot
    from lorahub.registry.catalog import Catalog

    with tempfile.TemporaryDirectory(prefix=".lorahub-verify-") as scratch:
        catalog = Catalog.open(f"sqlite:///{Path(scratch) / 'catalog.db'}")
        try:
            try:
                snapshot.load(catalog.engine, {name: _read_rows(folder, name) for name in snapshot.SNAPSHOT_TABLES})
            except (errors.LorahubError, ValueError, KeyError) as exc:
                return [f"its rows cannot be read back ({exc})"]
            return (
                _key_problems(catalog)
                + _chain_problems(catalog, manifest)
                + _card_problems(catalog)
                + _blob_problems(folder, catalog, manifest)
            )
        finally:
            catalog.engine.dispose()


def _key_problems(catalog: Catalog) -> list[str]:
    from lorahub.signing.keys import public_key_from_pem

    problems = []
    for key in catalog.list_keys():
        try:
            _, fingerprint = public_key_from_pem(key.public_pem)
        except errors.LorahubError:
            fingerprint = ""
        if fingerprint != key.fingerprint:
            problems.append(f"the key stored as {key.fingerprint[:16]}… is another key (or none)")
    return problems


def _chain_problems(catalog: Catalog, manifest: dict[str, Any]) -> list[str]:
    from lorahub.signing.keys import verify_signature

    head = manifest.get("audit_head")
    expected = (int(head[0]), str(head[1])) if isinstance(head, list) and len(head) == 2 else None
    found = catalog.verify_audit(verify=verify_signature, expected_head=expected)
    return [f"audit event {p.seq}: {p.kind}: {p.detail}" for p in found]


def _card_problems(catalog: Catalog) -> list[str]:
    from lorahub.registry.catalog import Filters

    keys = {key.fingerprint: key.public_pem for key in catalog.list_keys()}
    problems = []
    for version in catalog.list_versions(Filters(include_removed=True)):
        problems += _one_card(version, keys)
    return problems


def _one_card(version: AdapterVersion, keys: dict[str, str]) -> list[str]:
    from lorahub.signing.dsse import Envelope, EnvelopeSignature, verify_envelope
    from lorahub.signing.signed import CARD_PAYLOAD_TYPE, SignedCard

    try:
        signatures = tuple(
            EnvelopeSignature(s.keyid, base64.b64decode(s.sig, validate=True)) for s in version.signatures
        )
        signed = SignedCard.from_envelope(Envelope(version.card_json.encode("utf-8"), CARD_PAYLOAD_TYPE, signatures))
    except (errors.LorahubError, ValueError) as exc:
        return [f"{version.ref}: its card or a signature does not parse ({exc})"]
    problems = []
    if signed.card.content_digest != version.content_digest or signed.card.name != version.name:
        problems.append(f"{version.ref}: its card names another adapter or other tensors")
    for claimed, check in zip(signed.envelope.signatures, verify_envelope(signed.envelope, keys), strict=True):
        if claimed.keyid in keys and not check.valid:
            problems.append(f"{version.ref}: the signature by {claimed.keyid[:16]}… does not verify ({check.reason})")
    return problems


def _blob_problems(folder: Path, catalog: Catalog, manifest: dict[str, Any]) -> list[str]:
    from lorahub.registry import snapshot

    sizes = {row["sha256"]: int(row["size"]) for row in snapshot.dump(catalog.engine, "blob")}
    not_held = set(manifest.get("missing_blobs") or [])
    problems, held = [], set()
    for blob in sorted((folder / "blobs" / "sha256").glob("*/*")):
        held.add(blob.name)
        digest = hashlib.sha256()
        with open(blob, "rb") as reader:
            while chunk := reader.read(CHUNK):
                digest.update(chunk)
        if digest.hexdigest() != blob.name:
            problems.append(f"blob {blob.name[:16]}…: its bytes hash to {digest.hexdigest()[:16]}…")
        elif blob.name in sizes and blob.stat().st_size != sizes[blob.name]:
            problems.append(f"blob {blob.name[:16]}…: {blob.stat().st_size} bytes, catalogued as {sizes[blob.name]}")
    for sha256 in sorted(set(sizes) - held - not_held):
        problems.append(f"blob {sha256[:16]}… is catalogued but not in the backup")
    return problems


def _restore_keys(source: Path, keys_dir: Path) -> tuple[str, ...]:
    """Copy identity files the home does not have yet (private files stay 0600, the folder 0700)."""
    if not source.is_dir():
        return ()
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    restored = []
    for entry in sorted(source.iterdir()):
        target = keys_dir / entry.name
        if entry.is_file() and not target.exists():
            shutil.copyfile(entry, target)
            target.chmod(0o600)
            restored.append(entry.name)
    return tuple(restored)


def _manifest(folder: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise errors.RestoreRefusedError(f"{folder}: no readable {MANIFEST} ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise errors.RestoreRefusedError(f"{folder}: not a {FORMAT} backup")
    return manifest


def _read_rows(folder: Path, name: str) -> Iterator[dict[str, Any]]:
    path = folder / "catalog" / f"{name}.jsonl"
    if not path.is_file():
        return
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)


@contextmanager
def _unpacked(source: Path) -> Iterator[Path]:
    """The backup's folder: ``source`` itself, or a tarball extracted (regular files and folders only) into a
    scratch folder that is removed afterwards."""
    if source.is_dir():
        yield source
        return
    if not source.is_file() or not source.name.endswith(TARBALL_SUFFIXES):
        raise errors.RestoreRefusedError(f"{source} is neither a backup folder nor a .tar/.tar.gz/.tgz")
    with tempfile.TemporaryDirectory(prefix=".lorahub-restore-") as scratch:
        try:
            with tarfile.open(source) as archive:
                archive.extractall(scratch, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise errors.RestoreRefusedError(f"{source}: the tarball cannot be read ({exc})") from None
        folders = [p for p in Path(scratch).iterdir() if (p / MANIFEST).is_file()]
        if len(folders) != 1:
            raise errors.RestoreRefusedError(f"{source}: no backup folder (with {MANIFEST}) inside")
        yield folders[0]

"""Teams: one catalogue (PostgreSQL) and one blob store shared by several homes, with roles (docs/team.md).

A team is a TOML file (:class:`~lorahub.sdk.home.TeamConfig`) naming the database and the blob store; each member's
home points at it (``team = "PATH"`` in the home's ``config.toml``) and keeps its own keys. ``init_team`` writes
the file, makes the initialiser the first admin (a signed ``role-grant``) and points the initialiser's home at it;
``join_team`` points another home at it and writes nothing else: a member's key is recorded when an admin grants
it a role, with the public key the member hands over. What each role may do is :mod:`lorahub.registry.roles`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorahub import errors
from lorahub.sdk.home import CONFIG_FILE, TEAM_KEY, Settings, TeamConfig, mask_url, set_config_value

if TYPE_CHECKING:
    from lorahub.registry.catalog import RoleRow
    from lorahub.sdk.hub import Hub


@dataclass(frozen=True)
class TeamStatus:
    """A team as one member's home sees it."""

    config: Path
    database_url: str
    blobs_url: str | None
    members: tuple[RoleRow, ...]
    me: str | None
    """The home's default identity's fingerprint (None: it has none)."""

    @property
    def my_role(self) -> str | None:
        return next((m.role for m in self.members if m.fingerprint == self.me), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "config": str(self.config),
            "database_url": mask_url(self.database_url),
            "blobs_url": self.blobs_url,
            "me": self.me,
            "my_role": self.my_role,
            "members": [
                {
                    "fingerprint": m.fingerprint,
                    "name": m.name,
                    "role": m.role,
                    "granted_by": m.granted_by,
                    "granted_at": m.granted_at.isoformat(),
                }
                for m in self.members
            ],
        }


def init_team(hub: Hub, *, database_url: str, blobs_url: str | None, config: str | os.PathLike[str]) -> TeamStatus:
    """Create a team on ``database_url``: the catalogue is migrated, this home's default identity becomes its first
    admin, the team config is written to ``config`` and this home points at it. Refused (nothing written) when the
    file exists or the catalogue already has a team."""
    from lorahub.registry.catalog import Catalog, KeyRow

    signer = hub.signer()
    identity = signer.identity
    path = Path(config).expanduser().absolute()
    if path.exists():
        raise errors.TeamError(
            f"{path} exists", hint="Choose another --config path, or join that team: lorahub team join PATH."
        )
    team = TeamConfig(path, database_url, _absolute_folder(blobs_url))
    catalogue = Catalog.open(database_url)
    try:
        if catalogue.team_active():
            raise errors.TeamError(
                f"{mask_url(database_url)} already has a team",
                hint="Join it with the config file its admin wrote: lorahub team join PATH.",
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(team.text(), encoding="utf-8")
        try:
            key = KeyRow(identity.fingerprint, identity.user_id, identity.public_pem)
            catalogue.grant_role(key, "admin", audit=hub.audit_actor(signer))
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        set_config_value(hub.settings.config_path, TEAM_KEY, str(path))
        return _status(catalogue, team, identity.fingerprint)
    finally:
        catalogue.engine.dispose()


def join_team(home: str | os.PathLike[str] | None, config: str | os.PathLike[str]) -> None:
    """Point the home at the team config ``config``: its database and blob store from now on; its keys stay its
    own. Writes nothing but the home's ``config.toml``, and only once the team config reads."""
    path = Path(config).expanduser().absolute()
    TeamConfig.read(path)
    set_config_value(Settings.resolve(home).config_path, TEAM_KEY, str(path))


def status(hub: Hub) -> TeamStatus:
    """The team this home belongs to, with every member's role."""
    team = hub.settings.team
    if team is None:
        raise errors.TeamError(
            "this home is not in a team",
            hint=f"Join one (lorahub team join PATH) or start one (lorahub team init); see {CONFIG_FILE}.",
        )
    default = hub.keys.default()
    return _status(hub.catalog, team, default.fingerprint if default is not None else None)


def grant(
    hub: Hub, fingerprint: str | None, role: str, *, public_pem: str | None = None, name: str | None = None
) -> RoleRow:
    """Give a member's key a role (an admin's act, signed and audited). The key is ``public_pem`` (the member's
    ``lorahub keys export``; ``fingerprint``, when given too, must be its own), or the one the catalogue already
    knows by ``fingerprint`` (at least 8 characters). ``name`` names the key for ``team list`` (default: the name
    the catalogue knows it by, else its fingerprint's start)."""
    from lorahub.registry.catalog import KeyRow
    from lorahub.registry.roles import parse_role
    from lorahub.signing.keys import public_key_from_pem

    parsed_role = parse_role(role)
    wanted = (fingerprint or "").lower().removeprefix("sha256:")
    if public_pem is not None:
        _, actual = public_key_from_pem(public_pem)
        if fingerprint is not None and (len(wanted) < 8 or not actual.startswith(wanted)):
            raise errors.TeamError(
                f"the public key given has fingerprint {actual}, not {fingerprint}",
                hint="Check that the member sent the key of the identity they sign with (lorahub keys list).",
            )
        known = hub.catalog.get_key(actual)
        key = KeyRow(actual, name or (known.name if known is not None else actual[:16]), public_pem)
    else:
        known_row = _known_key(hub, wanted)
        key = KeyRow(known_row.fingerprint, name or known_row.name, known_row.public_pem)
    return hub.catalog.grant_role(key, parsed_role, audit=hub.audit_actor())


def revoke(hub: Hub, fingerprint: str) -> RoleRow:
    """Take a member's role away (an admin's act, signed and audited); the last admin's is refused."""
    wanted = fingerprint.lower().removeprefix("sha256:")
    matches = [m.fingerprint for m in hub.catalog.team_roles() if m.fingerprint.startswith(wanted)]
    if len(wanted) < 8 or len(matches) != 1:
        found = "no member" if len(wanted) < 8 or not matches else f"{len(matches)} members"
        raise errors.TeamError(
            f"{fingerprint!r} names {found} of this team",
            hint="Give at least 8 characters of one member's fingerprint (lorahub team list).",
        )
    return hub.catalog.revoke_role(matches[0], audit=hub.audit_actor())


def _known_key(hub: Hub, prefix: str) -> Any:
    matches = [row for row in hub.catalog.list_keys() if row.fingerprint.startswith(prefix)] if len(prefix) >= 8 else []
    if len(matches) != 1:
        found = "no key" if not matches else f"{len(matches)} keys"
        raise errors.TeamError(
            f"the catalogue knows {found} by {prefix!r}",
            hint="Pass the member's public key file instead: lorahub team grant MEMBER.pub.pem ROLE "
            "(they print it with `lorahub keys export`).",
        )
    return matches[0]


def _absolute_folder(blobs_url: str | None) -> str | None:
    """A folder given as the team's blob store is written as an absolute path: members open it from elsewhere."""
    if blobs_url is None or "://" in blobs_url:
        return blobs_url
    return str(Path(blobs_url).expanduser().absolute())


def _status(catalogue: Any, team: TeamConfig, me: str | None) -> TeamStatus:
    return TeamStatus(team.path, team.database_url, team.blobs_url, tuple(catalogue.team_roles()), me)


# --- moving a home's versions in ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TeamPushReport:
    """What ``team push`` did with each of the home's active versions."""

    pushed: tuple[str, ...]
    already: tuple[str, ...]
    """Versions whose card the team already holds under the same name and number."""
    refused: tuple[tuple[str, str], ...]
    """(ref, why): the number is taken by other content in the team, or the home holds no intact copy."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "pushed": list(self.pushed),
            "already": list(self.already),
            "refused": [{"ref": ref, "reason": reason} for ref, reason in self.refused],
        }


def push_home(hub: Hub) -> TeamPushReport:
    """Copy the versions of the home's own catalogue (``catalog.db`` in the home, what it held before joining)
    into the team's: blobs, cards and their signatures as they are, each recorded by a signed ``push-import`` event
    whose details carry the home's own audit events about that version (with their hashes and signatures, which
    stay verifiable with their actors' keys) and the home chain's head. Refused when the home's chain does not
    verify; a version already in the team is left alone, so pushing again pushes only what is new."""
    from lorahub.registry.blobs import BlobStore
    from lorahub.registry.catalog import Catalog

    if hub.settings.team is None:
        raise errors.TeamError("this home is not in a team", hint="Join one first: lorahub team join PATH.")
    local_db = hub.settings.home / "catalog.db"
    if not local_db.is_file() or hub.settings.local_database_url == hub.settings.database_url:
        raise errors.TeamError(
            f"this home has no catalogue of its own to push ({local_db})",
            hint="team push copies what a home held before it joined a team.",
        )
    hub.require("push-import")
    actor = hub.audit_actor()
    local = Catalog.open(hub.settings.local_database_url)
    try:
        _refuse_broken_chain(local)
        context = _PushContext(hub, local, BlobStore(hub.settings.home / "blobs"), actor)
        for page in local.version_pages():
            for version in page:
                context.push(version)
        return TeamPushReport(tuple(context.pushed), tuple(context.already), tuple(context.refused))
    finally:
        local.engine.dispose()


def _refuse_broken_chain(local: Any) -> None:
    from lorahub.signing.keys import verify_signature

    problems = local.verify_audit(verify=verify_signature)
    if problems:
        first = problems[0]
        raise errors.TeamError(
            f"the home's own audit chain does not verify ({len(problems)} problem(s); event {first.seq}: "
            f"{first.kind}: {first.detail}), so its history cannot be vouched for",
            hint="lorahub audit --verify in the home (with LORAHUB_DATABASE_URL=sqlite:///HOME/catalog.db) says more.",
        )


class _PushContext:
    """One push: the home's catalogue and blobs on one side, the team's on the other."""

    def __init__(self, hub: Hub, local: Any, local_blobs: Any, actor: Any) -> None:
        self.hub, self.local, self.local_blobs, self.actor = hub, local, local_blobs, actor
        self.head = local.audit_head()
        self.pushed: list[str] = []
        self.already: list[str] = []
        self.refused: list[tuple[str, str]] = []

    def push(self, version: Any) -> None:
        from lorahub.registry.catalog import NewVersion

        team = self.hub.catalog
        try:
            taken = team.get(version.name, version.number, include_removed=True)
        except errors.AdapterNotFoundError:
            taken = None
        if taken is not None:
            if taken.card_json == version.card_json:
                self.already.append(version.ref)
            else:
                self.refused.append((version.ref, f"the team's {taken.ref} is another card"))
            return
        source = self._intact_copy(version.blob_sha256)
        if source is None:
            self.refused.append((version.ref, "no intact copy of its file in this home"))
            return
        blob = self.hub.blobs.put_file(source, expected_sha256=version.blob_sha256)
        self._record_signers(version)
        new = NewVersion(
            name=version.name,
            number=version.number,
            content_digest=version.content_digest,
            blob=blob,
            file_name=version.file_name,
            format=version.format,
            family=version.family,
            license_id=version.license_id,
            commercial_use=version.commercial_use,
            consent_status=version.consent_status,
            description=version.description,
            trigger_words=version.trigger_words,
            tags=version.tags,
            card_json=version.card_json,
            signatures=[(s.keyid, s.sig) for s in version.signatures],
            action="push-import",
            details={"from_home": str(self.hub.settings.home), "history": self._history(version)}
            | ({"home_head": list(self.head)} if self.head is not None else {}),
        )
        team.add_version(new, audit=self.actor, allow_duplicate=True)
        self.pushed.append(version.ref)

    def _intact_copy(self, sha256: str) -> Path | None:
        if self.local_blobs.verify(sha256):
            return Path(self.local_blobs.path_for(sha256))
        for row in self.local.locations.of_sha256([sha256]):
            if row.state == "present" and Path(row.path).is_file():
                return Path(row.path)
        return None

    def _record_signers(self, version: Any) -> None:
        """The team must know the keys that signed a card to check it; they are recorded, not trusted (trust is a
        curator's decision)."""
        from lorahub.registry.catalog import KeyRow

        for signature in version.signatures:
            if self.hub.catalog.get_key(signature.keyid) is None:
                known = self.local.get_key(signature.keyid)
                if known is not None:
                    self.hub.catalog.upsert_key(KeyRow(known.fingerprint, known.name, known.public_pem))

    def _history(self, version: Any) -> list[dict[str, Any]]:
        events = self.local.audit_events(adapter=version.name)
        return [
            {
                "seq": e.seq,
                "time": e.time,
                "actor": e.actor,
                "action": e.action,
                "subject_digest": e.subject_digest,
                "details": json.loads(e.details),
                "prev_hash": e.prev_hash,
                "hash": e.hash,
                "signature": e.signature,
            }
            for e in events
            if e.subject_version in (None, version.number)
        ]

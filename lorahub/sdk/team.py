"""Teams: one catalogue (PostgreSQL) and one blob store shared by several homes, with roles (docs/team.md).

A team is a TOML file (:class:`~lorahub.sdk.home.TeamConfig`) naming the database and the blob store; each member's
home points at it (``team = "PATH"`` in the home's ``config.toml``) and keeps its own keys. ``init_team`` writes
the file, makes the initialiser the first admin (a signed ``role-grant``) and points the initialiser's home at it;
``join_team`` points another home at it and writes nothing else: a member's key is recorded when an admin grants
it a role, with the public key the member hands over. What each role may do is :mod:`lorahub.registry.roles`.
"""

from __future__ import annotations

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


def grant(hub: Hub, fingerprint: str, role: str, *, public_pem: str | None = None) -> RoleRow:
    """Give a member's key a role (an admin's act, signed and audited). The key is the one the catalogue knows by
    that fingerprint, or ``public_pem`` (the member's `lorahub keys export`), which must match it."""
    from lorahub.registry.catalog import KeyRow
    from lorahub.registry.roles import parse_role
    from lorahub.signing.keys import public_key_from_pem

    parsed_role = parse_role(role)
    wanted = fingerprint.lower().removeprefix("sha256:")
    if public_pem is not None:
        _, actual = public_key_from_pem(public_pem)
        if not actual.startswith(wanted) or len(wanted) < 8:
            raise errors.TeamError(
                f"the public key given has fingerprint {actual}, not {fingerprint}",
                hint="Check that the member sent the key of the identity they sign with (lorahub keys list).",
            )
        name = next((row.name for row in hub.catalog.list_keys() if row.fingerprint == actual), actual[:16])
        key = KeyRow(actual, name, public_pem)
    else:
        known = _known_key(hub, wanted)
        key = KeyRow(known.fingerprint, known.name, known.public_pem)
    return hub.catalog.grant_role(key, parsed_role, audit=hub.audit_actor())


def revoke(hub: Hub, fingerprint: str) -> RoleRow:
    """Take a member's role away (an admin's act, signed and audited); the last admin's is refused."""
    wanted = fingerprint.lower().removeprefix("sha256:")
    matches = [m.fingerprint for m in hub.catalog.team_roles() if m.fingerprint.startswith(wanted)]
    if len(wanted) < 8 or len(matches) != 1:
        raise errors.TeamError(
            f"{fingerprint!r} names {len(matches) if len(wanted) >= 8 else 'no'} member(s) of this team",
            hint="Give at least 8 characters of one member's fingerprint (lorahub team list).",
        )
    return hub.catalog.revoke_role(matches[0], audit=hub.audit_actor())


def _known_key(hub: Hub, prefix: str) -> Any:
    matches = [row for row in hub.catalog.list_keys() if row.fingerprint.startswith(prefix)]
    if len(prefix) < 8 or len(matches) != 1:
        raise errors.TeamError(
            f"the catalogue knows {len(matches) if len(prefix) >= 8 else 'no'} key(s) by {prefix!r}",
            hint="Pass the member's public key: lorahub team grant FINGERPRINT ROLE --key MEMBER.pub.pem "
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

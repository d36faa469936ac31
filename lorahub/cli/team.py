"""``lorahub team …``: a catalogue shared by several homes, with roles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from lorahub.cli import output
from lorahub.cli.context import HubContext, pass_hub_context

ROLE_NAMES = ("reader", "contributor", "curator", "admin")


@click.group("team")
def team_group() -> None:
    """A team: one catalogue (PostgreSQL) and blob store shared by several homes, each with its own keys; roles
    (reader, contributor, curator, admin) granted to key fingerprints say who may do what."""


def _print_status(status: Any, as_json: bool) -> None:
    if as_json:
        output.print_json(status.as_dict())
        return
    data = status.as_dict()
    output.stdout.print(f"team config  {escape(data['config'])}")
    output.stdout.print(f"database     {escape(data['database_url'])}")
    output.stdout.print(f"blobs        {escape(data['blobs_url'] or '(each home its own)')}")
    table = Table("fingerprint", "name", "role", "granted by", box=None)
    for member in data["members"]:
        mark = " (you)" if member["fingerprint"] == data["me"] else ""
        table.add_row(member["fingerprint"], escape(member["name"] + mark), member["role"], member["granted_by"][:16])
    output.stdout.print(table)


@team_group.command("init")
@click.option("--database", "database_url", required=True, help="The team's catalogue, e.g. postgresql://HOST/DB.")
@click.option("--blobs", "blobs_url", help="The team's blob store: a folder every member reaches, or s3://BUCKET/….")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("lorahub-team.toml"),
    show_default=True,
    help="Where to write the team config that members join.",
)
@click.option("--json", "as_json", is_flag=True)
@pass_hub_context
def team_init(context: HubContext, database_url: str, blobs_url: str | None, config_path: Path, as_json: bool) -> None:
    """Start a team: write its config, make your default identity its first admin (signed, audited) and point this
    home at it."""
    status = context.hub.team_init(database_url, config_path, blobs_url=blobs_url)
    _print_status(status, as_json)


@team_group.command("join")
@click.argument("config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
@pass_hub_context
def team_join(context: HubContext, config_path: Path, as_json: bool) -> None:
    """Point this home at a team's CONFIG (its catalogue and blobs); your keys stay in your home. An admin then
    grants your key a role: send them `lorahub keys export YOU`."""
    from lorahub.sdk.hub import Hub

    status = Hub.team_join(config_path, context.home)
    _print_status(status, as_json)
    if not as_json and status.my_role is None:
        output.stderr.print("next: send your public key (lorahub keys export ME) to an admin, who grants you a role")


@team_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_hub_context
def team_list(context: HubContext, as_json: bool) -> None:
    """The team's members: key fingerprints and their roles."""
    _print_status(context.hub.team(), as_json)


@team_group.command("grant")
@click.argument("fingerprint")
@click.argument("role", type=click.Choice(ROLE_NAMES))
@click.option(
    "--key",
    "key_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The member's public key (PEM), when the catalogue does not know it yet.",
)
@pass_hub_context
def team_grant(context: HubContext, fingerprint: str, role: str, key_file: Path | None) -> None:
    """Give the key FINGERPRINT a ROLE (admins only): reader, contributor, curator or admin."""
    pem = key_file.read_text(encoding="utf-8") if key_file is not None else None
    row = context.hub.team_grant(fingerprint, role, public_pem=pem)
    output.stdout.print(f"granted {row.role} to {escape(row.name)}  {row.fingerprint}")


@team_group.command("revoke")
@click.argument("fingerprint")
@pass_hub_context
def team_revoke(context: HubContext, fingerprint: str) -> None:
    """Take the role of the key FINGERPRINT away (admins only); its past events keep verifying."""
    row = context.hub.team_revoke(fingerprint)
    output.stdout.print(f"revoked {row.role} of {escape(row.name)}  {row.fingerprint}")

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
@click.argument("member")
@click.argument("role", type=click.Choice(ROLE_NAMES))
@click.option("--name", help="A name for the member's key in `team list` (default: the name the catalogue knows).")
@pass_hub_context
def team_grant(context: HubContext, member: str, role: str, name: str | None) -> None:
    """Give a member's key a ROLE (admins only): reader, contributor, curator or admin.

    MEMBER is the member's public key file (what `lorahub keys export` printed), or the fingerprint (8 characters or
    more) of a key the catalogue already knows."""
    path = Path(member)
    if path.is_file():
        row = context.hub.team_grant(None, role, public_pem=path.read_text(encoding="utf-8"), name=name)
    else:
        row = context.hub.team_grant(member, role, name=name)
    output.stdout.print(f"granted {row.role} to {escape(row.name)}  {row.fingerprint}")


@team_group.command("revoke")
@click.argument("fingerprint")
@pass_hub_context
def team_revoke(context: HubContext, fingerprint: str) -> None:
    """Take the role of the key FINGERPRINT away (admins only); its past events keep verifying."""
    row = context.hub.team_revoke(fingerprint)
    output.stdout.print(f"revoked {row.role} of {escape(row.name)}  {row.fingerprint}")


@team_group.command("push")
@click.option("--json", "as_json", is_flag=True)
@pass_hub_context
def team_push(context: HubContext, as_json: bool) -> None:
    """Copy the versions this home held before joining (its own catalog.db and blobs) into the team: files,
    signed cards and their audit history; versions already there are left alone."""
    from lorahub.cli import exits

    report = context.hub.team_push()
    if as_json:
        output.print_json(report.as_dict())
    else:
        for ref in report.pushed:
            output.stdout.print(f"pushed {ref}")
        for ref in report.already:
            output.stdout.print(f"[dim]already in the team: {ref}[/]")
        for ref, reason in report.refused:
            output.stderr.print(f"[red]not pushed[/] {ref}: {escape(reason)}")
    exits.settle_batch(
        len(report.refused),
        {},
        message=f"{len(report.refused)} version(s) not pushed",
        hint="Each is listed with the reason; the others are in the team.",
    )


@click.command("backup")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--with-keys", is_flag=True, help="Also copy the home's identities (private keys): keep OUT private.")
@click.option("--json", "as_json", is_flag=True)
@pass_hub_context
def backup_command(context: HubContext, out: Path, with_keys: bool, as_json: bool) -> None:
    """Export everything the catalogue holds to OUT: a new folder, or a tarball (.tar, .tar.gz, .tgz) by its
    suffix. `lorahub restore OUT` reads it back, verified."""
    result = context.hub.backup(out, with_keys=with_keys)
    if as_json:
        output.print_json(result.as_dict())
        return
    versions, events = result.rows["version"], result.rows["audit_event"]
    output.stdout.print(
        f"backed up {versions} version(s), {events} audit event(s), {result.blobs} file(s) "
        f"({result.blob_bytes:,} bytes) to {escape(str(result.out))}"
    )
    for sha256 in result.missing_blobs:
        output.stderr.print(f"[yellow]![/] blob {sha256[:16]}…: no intact copy in this home (its rows are kept)")


@click.command("restore")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
@pass_hub_context
def restore_command(context: HubContext, source: Path, as_json: bool) -> None:
    """Read a backup (folder or tarball) into this home, whose catalogue must be empty. Everything is verified
    first (audit chain, cards and signatures, keys, file digests); if anything fails, nothing is written."""
    result = context.hub.restore(source)
    if as_json:
        output.print_json(result.as_dict())
        return
    output.stdout.print(
        f"restored {result.rows['version']} version(s), {result.rows['audit_event']} audit event(s) and "
        f"{result.blobs} file(s) from {escape(str(source))}"
    )

"""``lorahub keys …`` (own identities) and ``lorahub trust …`` (other people's public keys)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from lorahub.cli import output
from lorahub.cli.context import HubContext, pass_hub_context


@click.group("keys")
def keys_group() -> None:
    """Your identities: ECDSA P-256 keys that sign cards and audit events."""


@keys_group.command("create")
@click.argument("user_id")
@click.option(
    "--passphrase-env", metavar="VAR", help="Encrypt the key with the passphrase in this environment variable."
)
@pass_hub_context
def keys_create(context: HubContext, user_id: str, passphrase_env: str | None) -> None:
    """Create an identity, e.g. lorahub keys create "Alice <alice@studio.example>"."""
    identity = context.hub.create_identity(user_id, passphrase_env=passphrase_env)
    output.stdout.print(f"created {identity.user_id}\nfingerprint {identity.fingerprint}")
    if identity.encrypted:
        output.stderr.print("the key is encrypted: set LORAHUB_PASSPHRASE when signing")


@keys_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_hub_context
def keys_list(context: HubContext, as_json: bool) -> None:
    """Your identities and their fingerprints; * marks the default."""
    views = context.hub.identities()
    if as_json:
        output.print_json(
            [
                {"user_id": v.identity.user_id, "fingerprint": v.identity.fingerprint, "default": v.default}
                | {"encrypted": v.identity.encrypted, "created": v.identity.created}
                for v in views
            ]
        )
        return
    for view in views:
        mark = "*" if view.default else " "
        lock = " (encrypted)" if view.identity.encrypted else ""
        output.stdout.print(f"{mark} {view.identity.fingerprint}  {view.identity.user_id}{lock}")


@keys_group.command("export")
@click.argument("ref")
@pass_hub_context
def keys_export(context: HubContext, ref: str) -> None:
    """Print an identity's public key (PEM) for others to `lorahub trust add`."""
    click.echo(context.hub.keys.export_public(ref), nl=False)


@keys_group.command("default")
@click.argument("ref")
@pass_hub_context
def keys_default(context: HubContext, ref: str) -> None:
    """Sign with this identity unless told otherwise."""
    context.hub.keys.set_default(ref)
    output.stdout.print(f"default identity: {context.hub.keys.get(ref).user_id}")


@click.group("trust")
def trust_group() -> None:
    """Whose signatures this home trusts. Your own keys are always trusted (until revoked)."""


@trust_group.command("add")
@click.argument("pem_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", help="A name for the key's owner (default: the fingerprint).")
@pass_hub_context
def trust_add(context: HubContext, pem_file: Path, name: str | None) -> None:
    """Trust the signatures of the public key in PEM_FILE."""
    record = context.hub.trust_add(pem_file.read_text(encoding="utf-8"), name=name)
    output.stdout.print(f"trusted {record.name}  {record.fingerprint}")


@trust_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_hub_context
def trust_list(context: HubContext, as_json: bool) -> None:
    """Every key the catalog knows, with its state: own, trusted or revoked."""
    records = context.hub.trusted_keys()
    if as_json:
        output.print_json(
            [
                {"fingerprint": r.fingerprint, "name": r.name, "own": r.own, "trusted": r.trusted}
                | {"revoked_at": r.revoked_at}
                for r in records
            ]
        )
        return
    table = Table("fingerprint", "name", "state", box=None)
    for r in records:
        state = f"revoked {r.revoked_at}" if r.revoked_at else ("own" if r.own else "trusted")
        table.add_row(r.fingerprint, r.name, state)
    output.stdout.print(table)


@trust_group.command("revoke")
@click.argument("fingerprint")
@pass_hub_context
def trust_revoke(context: HubContext, fingerprint: str) -> None:
    """Stop trusting a key. Its signatures, earlier ones included, no longer count (see docs/reference/card.md)."""
    record = context.hub.trust_revoke(fingerprint)
    output.stdout.print(f"revoked {record.name}  {record.fingerprint}")

"""``lorahub verify`` and ``lorahub audit``."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click
from rich.markup import escape

from lorahub import errors
from lorahub.cli import output
from lorahub.cli.context import HubContext, pass_hub_context


@click.command("verify")
@click.argument("target", required=False)
@click.option("--all", "everything", is_flag=True, help="Every catalogued version, wherever its file lies.")
@click.option("--policy", type=click.Path(path_type=Path, dir_okay=False), help="Policy TOML (default: the home's).")
@click.option(
    "--key",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="FILE only: check against this public key (PEM) alone; no home is opened or written.",
)
@click.option(
    "--oms-bundle",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Check the file against this OpenSSF model-signing bundle (made by `model_signing sign key`) instead.",
)
@click.option("--json", "as_json", is_flag=True)
@pass_hub_context
def verify_command(
    context: HubContext,
    *,
    target: str | None,
    everything: bool,
    policy: Path | None,
    key: Path | None,
    oms_bundle: Path | None,
    as_json: bool,
) -> None:
    """Check a FILE or NAME[@VERSION]: integrity, structure, card, signatures, trust, catalogue, policy.

    --all checks every catalogued version; files unchanged (size, mtime, inode) since they last passed are not
    read again. --key checks a FILE that carries its card against one public key, as `cosign verify --key` does,
    with the built-in policy unless --policy names one. --oms-bundle SIG checks the file against an OpenSSF
    model-signing bundle signed with a P-256 key: its signature (by a key the home knows, or the --key one), the
    signer's trust, and the file's digest. Exits 0 when every check passes and 7 when any fails.
    """
    from lorahub.cli.library import print_verify_all
    from lorahub.sdk.hub import Hub

    single = key is not None or oms_bundle is not None
    if everything == (target is not None) or (single and everything):
        raise errors.ConflictingArgumentsError(
            "name one TARGET or pass --all (--key and --oms-bundle take one FILE)",
            hint="lorahub verify NAME@V, lorahub verify FILE [--key PEM] [--oms-bundle SIG] or lorahub verify --all",
        )
    if target is None:
        print_verify_all(context.hub.verify_all(policy=policy), as_json)
        return
    if oms_bundle is not None and key is not None:
        report = Hub.verify_oms_with_key(target, oms_bundle, key.read_text(encoding="utf-8"), policy=policy)
    elif oms_bundle is not None:
        report = context.hub.verify_oms(target, oms_bundle, policy=policy)
    elif key is not None:
        report = Hub.verify_with_key(target, key.read_text(encoding="utf-8"), policy=policy)
    else:
        report = context.hub.verify(target, policy=policy)
    if as_json:
        output.print_json(report.as_dict())
    else:
        output.print_checks(report.checks)
    if not report.ok:
        failed = ", ".join(c.name for c in report.checks if not c.ok)
        raise errors.VerificationFailedError(
            f"{target}: verification failed ({failed})", hint="Run with --json for details; see each ✗ line above."
        )


@click.command("audit")
@click.option("--who", help="Actor fingerprint (prefix).")
@click.option("--adapter", help="Adapter name (also lists the images generated with it).")
@click.option("--action", help="Action, e.g. add, remove, trust, revoke, generate.")
@click.option("--since", type=click.DateTime(), help="Only events at or after this time (UTC).")
@click.option("--verify", "check", is_flag=True, help="Check the chain: finds edited, deleted or reordered events.")
@click.option("--json", "as_json", is_flag=True)
@pass_hub_context
def audit_command(
    context: HubContext,
    *,
    who: str | None,
    adapter: str | None,
    action: str | None,
    since: datetime | None,
    check: bool,
    as_json: bool,
) -> None:
    """Who did what: the append-only, signed, hash-chained event log."""
    if check:
        problems = context.hub.verify_audit()
        unsigned = context.hub.unsigned_audit_events()
        if as_json:
            output.print_json({"ok": not problems, "problems": problems, "unsigned": unsigned})
        for problem in problems if not as_json else []:
            output.stdout.print(f"[bold red]✗[/] event {problem['seq']}: {problem['kind']}: {problem['detail']}")
        for event in unsigned if not as_json else []:
            text = f"event {event['seq']}: {event['action']} is unsigned: {event['unsigned']}"
            output.stdout.print(f"[yellow]![/] {escape(text)}")
        if problems:
            raise errors.AuditChainError(
                f"the audit chain is broken in {len(problems)} place(s)",
                hint="Someone changed the catalog database directly; restore it from a backup.",
            )
        if not as_json:
            output.stdout.print("[green]✓[/] audit chain intact")
        return
    events = context.hub.audit(who=who, adapter=adapter, action=action, since=since)
    if as_json:
        output.print_json(events)
        return
    for event in events:
        subject = event["subject_name"] or ""
        if event["action"] == "generate":  # one image, several adapters
            subject = ", ".join(f"{a.get('name')}:{a.get('weight')}" for a in event["details"].get("adapters", []))
        if event["subject_version"] is not None:
            subject += f"@{event['subject_version']}"
        if not event["signed"]:
            subject += "  (unsigned)"
        output.stdout.print(
            f"{event['seq']:>5} {event['time']}  {event['actor'][:16]}…  {event['action']:<10} {subject}"
        )

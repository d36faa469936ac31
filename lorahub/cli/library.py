"""``lorahub scan`` and the in-place views of ``add``, ``list`` and ``verify``: the library where it lies."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape
from rich.table import Table

from lorahub import errors
from lorahub.cli import exits, output
from lorahub.cli.context import HubContext, pass_hub_context

if TYPE_CHECKING:
    from lorahub.sdk.adding import AddOptions
    from lorahub.sdk.library import ScanResult
    from lorahub.sdk.locating import LibraryEntry
    from lorahub.sdk.verifying import VerifyReport

TOOLS = ("a1111", "forge", "comfyui", "invokeai")


@click.command("scan")
@click.argument("roots", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--tool",
    "tools",
    type=(click.Choice(TOOLS), click.Path(path_type=Path, file_okay=False)),
    multiple=True,
    metavar="TOOL ROOT",
    help="Also scan the LoRA folders of a tool installed at ROOT (repeatable).",
)
@click.option("--link", is_flag=True, help="Hard-link new files into the blob store when on the same filesystem.")
@click.option("--sign/--no-sign", default=True, show_default=True, help="Sign the cards with the default identity.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_hub_context
def scan_command(
    context: HubContext, /, roots: tuple[Path, ...], tools: tuple[tuple[str, Path], ...], **options: Any
) -> None:
    """Catalogue every .safetensors under ROOTS where it lies, and find what moved, changed or vanished.

    Nothing is copied and no file under ROOTS is ever written, moved or deleted. Files whose size, mtime and inode
    are unchanged since the last scan are not read; a re-scan is idempotent and resumes where a stopped one ended.
    """
    from lorahub.sdk.adding import AddOptions

    add_options = AddOptions(sign=options["sign"])
    run_scan(context, list(roots), add_options, tools=tools, link=options["link"], as_json=options["as_json"])


def run_scan(
    context: HubContext,
    roots: list[Path],
    options: AddOptions,
    *,
    tools: tuple[tuple[str, Path], ...] = (),
    find_missing: bool = True,
    link: bool,
    as_json: bool,
) -> None:
    """Scan with a progress bar, print the summary, exit non-zero when any file failed (the rest is recorded)."""
    with output.file_progress("scanning", disable=as_json) as advance:
        result = context.hub.scan(roots, options, tools=tools, find_missing=find_missing, link=link, progress=advance)
    if as_json:
        output.print_json(result.as_dict())
    else:
        _print_scan(result)
    exits.settle_batch(
        len(result.failures),
        result.tracebacks,
        message=f"{len(result.failures)} file(s) failed; everything else was catalogued",
        hint="Fix or remove the files listed above and scan again: finished files are not read again.",
    )


def _print_scan(result: ScanResult) -> None:
    counts = result.counts()
    output.stdout.print(", ".join(f"{name} {count}" for name, count in counts.items() if count or name == "added"))
    for added in result.added:
        output.stdout.print(f"  added      {escape(added.ref)}  {escape(str(added.path))}")
    for path, ref in result.duplicates:
        output.stdout.print(f"  duplicate  {escape(path)}  (same content as {escape(ref)})")
    for old, new, ref in result.moved:
        output.stdout.print(f"  moved      {escape(ref)}  {escape(old)} → {escape(new)}")
    for path, ref in result.changed:
        output.stdout.print(f"  [yellow]changed[/]    {escape(path)}  (no longer {escape(ref)})")
    for path, ref in result.missing:
        output.stdout.print(f"  [yellow]missing[/]    {escape(path)}  ({escape(ref)} keeps its card)")
    for root in result.empty_roots:
        output.stderr.print(f"[yellow]{escape(root)} holds no adapter file: nothing under it was marked missing[/]")
    for path, code, message in result.failures:
        output.stdout.print(f"  [red]failed[/]     {escape(path)}  {escape(f'error[{code}]: {message}')}")


def print_locations(entries: list[LibraryEntry], as_json: bool) -> None:
    """``list --missing`` / ``--changed``: one row per location."""
    if as_json:
        output.print_json([entry.as_dict() for entry in entries])
        return
    table = Table("version", "state", "path", "last seen")
    for entry in entries:
        row = entry.location
        table.add_row(escape(entry.ref), row.state, escape(row.path), row.seen_at.strftime("%Y-%m-%d %H:%M"))
    output.stdout.print(table)
    output.stderr.print(f"{len(entries)} location(s)")


def print_duplicates(groups: list[list[LibraryEntry]], as_json: bool) -> None:
    if as_json:
        output.print_json([[entry.as_dict() for entry in group] for group in groups])
        return
    for group in groups:
        output.stdout.print(f"[bold]{escape(group[0].ref)}[/]  content {group[0].location.content_digest[:16]}…")
        for entry in group:
            output.stdout.print(f"  {escape(entry.location.path)}")
    output.stderr.print(f"{len(groups)} content(s) at more than one path")


def print_verify_all(reports: Iterator[VerifyReport], as_json: bool) -> None:
    """Each failing version as it is found, then the count; with --json one document whose reports are written
    as they come (a catalogue of 30,000 versions is not held in memory). Exit 7 when any failed."""
    verified = failed = 0
    if as_json:
        sys.stdout.write('{"reports": [')
    for report in reports:
        if as_json:
            sys.stdout.write(("," if verified else "") + "\n" + json.dumps(report.as_dict(), ensure_ascii=False))
        elif not report.ok:
            checks = "; ".join(f"{c.name}: {c.detail}" for c in report.checks if not c.ok)
            output.stdout.print(f"[bold red]✗[/] {escape(report.target)}  {escape(checks)}")
        verified += 1
        failed += not report.ok
    if as_json:
        sys.stdout.write(f'\n], "verified": {verified}, "failed": {failed}, "ok": {json.dumps(not failed)}}}\n')
    else:
        output.stdout.print(f"{verified - failed} of {verified} version(s) pass")
    if failed:
        raise errors.VerificationFailedError(
            f"{failed} of {verified} version(s) failed verification",
            hint="`lorahub verify NAME@V` shows every check of one; `lorahub scan` finds moved files.",
        )


def location_lines(details: dict[str, Any]) -> list[str]:
    """``show``: where the version's bytes are (store, library paths) and what lies beside them."""
    lines = ["blob store" if details["stored"] else ""]
    for location in details["locations"]:
        lines.append(f"{location['path']} ({location['state']}{', linked' if location['linked'] else ''})")
        lines += [f"  {n['kind']}: {n['name']} sha256 {n['sha256'][:16]}…" for n in location["neighbours"]]
    return [line for line in lines if line]

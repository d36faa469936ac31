"""``lorahub dataset scan`` / ``check``: consent manifests for training images."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.markup import escape

from lorahub import errors
from lorahub.cli import output

if TYPE_CHECKING:
    from lorahub.consent import ConsentReport


@click.group("dataset")
def dataset_group() -> None:
    """Who consented to the images an adapter learns from: manifests with per-image status and opt-out signals."""


@dataset_group.command("scan")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--sources", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="CSV or JSON of sources.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Manifest file to write.")
def dataset_scan(directory: Path, sources: Path | None, out: Path) -> None:
    """Hash every image, take captions and sources, read C2PA/CAWG and XMP opt-out signals; write the manifest."""
    from lorahub.consent import scan

    manifest = scan(directory, sources)
    manifest.write(out)
    counts = ", ".join(f"{status} {n}" for status, n in manifest.summary().items() if n)
    output.stdout.print(
        f"wrote {escape(str(out))}: {len(manifest.items)} image(s) ({counts}); digest {manifest.digest}"
    )


@dataset_group.command("check")
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
def dataset_check(manifest: Path, as_json: bool) -> None:
    """Counts by status; flags opted-out items, unknowns, and minors or real people without a release.

    Exits 7 when an item is opted out or a person lacks a release (unknowns are reported, not failed).
    """
    from lorahub.consent import check, load

    report = check(load(manifest))
    if as_json:
        output.print_json(report.as_dict())
    else:
        _render(report)
    if not report.ok:
        raise errors.VerificationFailedError(
            f"{manifest}: items opted out, or people without a release",
            hint="Remove those images (or record the releases in the sources file) and scan again.",
        )


def _render(report: ConsentReport) -> None:
    counts = ", ".join(f"{status} {n}" for status, n in report.counts.items() if n) or "no images"
    output.stdout.print(f"{counts}\ncard status: [bold]{report.card_status}[/]  digest {report.manifest_digest}")
    for item in report.opted_out:
        output.stdout.print(f"[red]opted out[/]  {escape(item.path)}: {escape('; '.join(item.reasons))}")
    for flag in report.people:
        output.stdout.print(f"[red]people[/]     {escape(flag.path)}: {escape(flag.problem)}")
    if report.unknown:
        output.stdout.print(f"[yellow]unknown[/]    {len(report.unknown)} image(s) with no consent information")
    if report.ok:
        output.stdout.print("[green]ok[/]")

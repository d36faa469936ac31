"""``lorahub inspect FILE``."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape
from rich.table import Table

from lorahub.cli import output

if TYPE_CHECKING:
    from lorahub.sdk.inspect import Report, Spread

SEVERITY_STYLE = {"error": "bold red", "warning": "yellow"}
CLAIM_STYLE = {"match": "green", "mismatch": "bold red", "absent": "dim"}
METADATA_PREVIEW_CHARS = 100
NUMBER = re.compile(r"\d+")


@click.command("inspect")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (schema lorahub.inspect/v1).")
@click.option("--all-metadata", is_flag=True, help="Show every metadata value in full.")
def inspect_command(path: Path, as_json: bool, all_metadata: bool) -> None:
    """What is this file? Format, layers, base model, rank, hashes, metadata and problems.

    Pickled files (.ckpt, .pt, .bin) are scanned, never loaded; a dangerous one exits with code 5.
    """
    from lorahub.sdk.inspect import inspect

    report = inspect(path)
    if as_json:
        output.print_json(report.as_dict())
    else:
        render(report, all_metadata=all_metadata)
    report.raise_if_dangerous()


def render(report: Report, *, all_metadata: bool = False) -> None:
    out = output.stdout
    out.print(f"[bold]{escape(report.path)}[/]  {report.file_size:,} bytes  {report.container}")
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold cyan", no_wrap=True)
    facts.add_column(overflow="fold")
    facts.add_row("format", report.format)
    facts.add_row("layer kinds", ", ".join(report.layer_kinds) or "-")
    facts.add_row("base model", _family(report))
    facts.add_row("components", ", ".join(f"{name} {count}" for name, count in report.components.items()) or "-")
    facts.add_row("modules", f"{report.modules:,}  ({report.tensors:,} tensors, {report.parameters:,} parameters)")
    facts.add_row("rank", _spread(report.rank, "-"))
    facts.add_row("alpha", _spread(report.alpha, "none (scale 1)"))
    facts.add_row("scale", _scale_rule(report.scale_rule))
    if report.support:
        facts.add_row("lorahub can", _support(report.support))
    facts.add_row("dtypes", ", ".join(f"{dtype} ×{count}" for dtype, count in report.dtypes.items()) or "-")
    for name, value in report.hashes.as_dict().items():
        facts.add_row(name, value or "[dim]n/a[/]")
    for claim in report.claims:
        note = f"  ({escape(claim.note)})" if claim.note else ""
        facts.add_row(claim.key, f"[{CLAIM_STYLE[claim.status]}]{claim.status}[/]{note}")
    for embedding in report.embeddings:
        facts.add_row("embedding", f"{escape(embedding['name'])}: {embedding['vectors']} × {embedding['dim']}")
    if report.pickle is not None:
        facts.add_row("imports", escape(", ".join(report.pickle.globals)) or "-")
    out.print(facts)
    _metadata(report.metadata, all_metadata)
    _problems(report)


def _support(support: dict[str, Any]) -> str:
    """One line per capability, then why not (the support matrix row of the file, docs/reference/support-matrix.md)."""
    via = {"peft": "as PEFT LoRA", "delta": "through lorahub's ΔW patch"}
    answers = [
        ("convert exactly", support["convert_exact"] or bool(support["exact_into"]), _into(support)),
        ("convert lossily (--lossy)", support["convert_lossy"], ""),
        ("load into a pipeline", support["load"], f" ({via[support['load_via']]})" if support["load_via"] else ""),
        ("bake into a base", support["bake"], ""),
    ]
    lines = [f"{'[green]yes[/]' if ok else '[red]no[/]'}  {what}{note}" for what, ok, note in answers]
    if support["needs_base"]:
        lines.append(f"[dim]ΔW of {', '.join(support['needs_base'])} needs the base weight (--base)[/]")
    lines += [f"[dim]{escape(reason)}[/]" for reason in support["reasons"]]
    return "\n".join(lines)


def _into(support: dict[str, Any]) -> str:
    """The layouts that hold the file exactly, when not every LoRA layout does (a FLUX Control LoRA's extras)."""
    if support["convert_exact"] or not support["exact_into"]:
        return ""
    return f" (--to {', '.join(support['exact_into'])} only)"


def _family(report: Report) -> str:
    verdict = report.base_model
    lines = [f"[bold]{verdict.family}[/]"] + [f"  {escape(e)}" for e in verdict.evidence]
    if verdict.metadata_family:
        lines.append(f"  metadata says {verdict.metadata_family}: {escape('; '.join(verdict.metadata_evidence))}")
    return "\n".join(lines)


def _scale_rule(rules: dict[str, int]) -> str:
    """``alpha/rank``, ``alpha/sqrt(rank) (rsLoRA)``, or both with their module counts."""
    from lorahub.sdk.inspect import SCALE_RULES

    named = {rule: f"{rule} (rsLoRA)" if rule == SCALE_RULES[True] else rule for rule in rules}
    if len(rules) <= 1:
        return next(iter(named.values()), "-")
    return ", ".join(f"{named[rule]} ×{count}" for rule, count in rules.items())


def _spread(spread: Spread, empty: str) -> str:
    if not spread.counts:
        return empty
    if len(spread.counts) == 1:
        text = next(iter(spread.counts))
    else:
        text = f"{spread.min:g}–{spread.max:g}  (" + ", ".join(f"{v}: {n}" for v, n in spread.counts.items()) + ")"
    return text + (f"; {spread.missing} module(s) without" if spread.missing else "")


def _metadata(metadata: dict[str, dict[str, Any]], full: bool) -> None:
    if not metadata:
        return
    table = Table(title="metadata", title_justify="left", show_header=False, box=None, padding=(0, 2))
    table.add_column(style="cyan", no_wrap=True)
    table.add_column(overflow="fold")
    for group, values in metadata.items():
        table.add_row(f"[bold]{group}[/]", "")
        rows = values.items() if full else _collapse_numbered(values)
        for key, value in rows:
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            if not full and len(text) > METADATA_PREVIEW_CHARS:
                text = text[:METADATA_PREVIEW_CHARS] + f"… ({len(text):,} chars, --all-metadata)"
            table.add_row(f"  {escape(key)}", escape(text))
    output.stdout.print(table)


def _collapse_numbered(values: dict[str, Any]) -> list[tuple[str, Any]]:
    """Keys that differ only by numbers and share one value (``unet:0:rank`` … ``unet:143:rank`` = 4) become
    one row, ``unet:{n}:rank`` = ``4 (×144)``: per-module metadata would otherwise fill the screen."""
    families: dict[str, list[str]] = defaultdict(list)
    for key in values:
        families[NUMBER.sub("{n}", key)].append(key)
    rows: list[tuple[str, Any]] = []
    for pattern, keys in families.items():
        distinct = {json.dumps(values[k], sort_keys=True) for k in keys}
        if len(keys) > 2 and len(distinct) == 1:
            rows.append((pattern, f"{_plain(values[keys[0]])} (×{len(keys)})"))
        else:
            rows += [(k, values[k]) for k in keys]
    return rows


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _problems(report: Report) -> None:
    if not report.problems:
        output.stdout.print("[green]no problems found[/]")
        return
    output.stdout.print("[bold]problems[/]")
    for problem in report.problems:
        style = SEVERITY_STYLE.get(problem.severity, "")
        keys = f"  e.g. {escape(problem.keys[0])}" if problem.keys else ""
        label = escape(f"{problem.severity}[{problem.code}]")
        output.stdout.print(f"  [{style}]{label}[/] {escape(problem.message)}{keys}")

"""``lorahub merge`` and ``lorahub lineage``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.tree import Tree

from lorahub import errors
from lorahub.cli import output
from lorahub.cli.context import HubContext, pass_hub_context

USES = click.Choice(["commercial", "non-commercial", "research"])


@click.command("merge")
@click.argument("adapters", nargs=-1, required=True, metavar="NAME[@V][:W]...")
@click.option("--out", required=True, help="Name of the merged adapter (a new catalogued, signed version).")
@click.option("--method", type=click.Choice(["cat", "svd"]), default="cat", show_default=True,
              help="cat: exact, rank Σrᵢ; svd: truncated to --rank, error reported.")  # fmt: skip
@click.option("--rank", type=click.IntRange(min=1), help="Rank of an svd merge (default: the largest input rank).")
@click.option("--use", type=USES, help="Also check that the merge may be used this way.")
@click.option("--accept-uncertain", is_flag=True, help="Go ahead when the licence answer is uncertain (audited).")
@click.option("--dtype", type=click.Choice(["fp16", "bf16", "fp32"]), help="Storage dtype (default: the first's).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_hub_context
def merge_command(
    ctx: HubContext, *, adapters: tuple[str, ...], out: str, method: str, rank: int | None, use: str | None,
    accept_uncertain: bool, dtype: str | None, as_json: bool,
) -> None:  # fmt: skip
    """Merge catalogued adapters into one, after a licence check and a family check.

    The result's card lists its parents with their weights and the method; the audit log records the merge.
    """
    result = ctx.hub.merge(
        list(adapters), out=out, method=method, rank=rank, use=use, accept_uncertain=accept_uncertain, dtype=dtype
    )
    if as_json:
        output.print_json(result.as_dict())
        return
    report = result.report
    output.stdout.print(
        f"merged {len(adapters)} adapters → {escape(result.added.name)}@{result.added.version} "
        f"({report.method}, {report.modules} modules, rank ≤ {report.max_rank}); licence: {result.verdict['verdict']}"
    )
    if report.method == "svd":
        output.stdout.print(
            f"svd: max relative error {report.max_rel_error:.3g}, min kept energy {report.min_kept_energy:.4f}"
        )


def _label(node: dict[str, Any]) -> str:
    ref = node["ref"] or f"unknown {node['content_digest'][:16]}…"
    parts = [f"[bold]{escape(ref)}[/bold]"]
    if node["relation"]:
        params = ", ".join(f"{k}={v}" for k, v in node["parameters"].items())
        parts.append(f"[cyan]{node['relation']}[/cyan]" + (f" ({escape(params)})" if params else ""))
    if node["license"]:
        parts.append(f"licence {escape(node['license'])}")
    signers = [f"{escape(s['name'] or s['fingerprint'][:16])} [{s['trust']}{'' if s['valid'] else ', INVALID'}]"
               for s in node["signers"]]  # fmt: skip
    parts.append("signed by " + ", ".join(signers) if signers else "unsigned")
    return " · ".join(parts)


def _grow(tree: Tree, node: dict[str, Any]) -> None:
    training = node["training"]
    if training:
        shown = {k: (f"{v[:12]}…" if isinstance(v, str) and len(v) == 64 else v) for k, v in training.items()}
        tree.add(f"[green]trained[/green] {escape(', '.join(f'{k}={v}' for k, v in shown.items()))}")
    for baked in node["baked_into"]:
        tree.add(f"[magenta]baked into[/magenta] {escape(str(baked['output']))} ({baked['time']})")
    for parent in node["parents"]:
        _grow(tree.add(_label(parent)), parent)


FORMATS = ("text", "json", "cyclonedx")


@click.command("lineage")
@click.argument("ref", metavar="NAME[@V]")
@click.option("--format", "form", type=click.Choice(FORMATS),
              help="text: a tree (default); json: the tree as JSON; cyclonedx: a CycloneDX 1.6 ML-BOM.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (the same as --format json).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the JSON or the BOM to FILE.")
@click.option("--svg", "svg_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Draw the graph (parents, children, relations) to FILE as SVG, as lorahub serve does.")  # fmt: skip
@pass_hub_context
def lineage_command(
    ctx: HubContext, *, ref: str, form: str | None, as_json: bool, out: Path | None, svg_out: Path | None
) -> None:
    """The tree of an adapter's parents (trained, merged, converted, resized from), with signers and licences.

    --format cyclonedx writes the same lineage as a CycloneDX 1.6 ML-BOM for compliance tools: the adapter with
    its hashes and licences, every parent as a pedigree ancestor with its relation, the base model, the datasets with
    their consent, the signers. The same catalogue gives the same bytes.

    --svg FILE draws it instead: its parents and the versions made from it, each edge with its relation.
    """
    from lorahub.sdk.bom import json_text, write_json

    if svg_out is not None:
        _lineage_svg(ctx, ref, svg_out, conflicts=form is not None or as_json or out is not None)
        return
    chosen = _lineage_format(form, as_json, out)
    if chosen == "text":
        data = ctx.hub.lineage(ref).as_dict()
        tree = Tree(_label(data))
        _grow(tree, data)
        output.stdout.print(tree)
        return
    document = ctx.hub.cyclonedx_bom(ref) if chosen == "cyclonedx" else ctx.hub.lineage(ref).as_dict()
    if out is None:
        sys.stdout.write(json_text(document))
        return
    write_json(document, out)
    output.stderr.print(f"wrote {escape(str(out))}" + (" (CycloneDX 1.6)" if chosen == "cyclonedx" else ""))


def _lineage_svg(ctx: HubContext, ref: str, out: Path, *, conflicts: bool) -> None:
    from lorahub.web.svg import lineage_svg, write_svg

    if conflicts:
        raise errors.ConflictingArgumentsError(
            "--svg draws the graph; --format, --json and --out write documents", hint="Run the command once for each."
        )
    tree = ctx.hub.lineage(ref).as_dict()
    children = [child.as_dict() for child in ctx.hub.children(ref)]
    write_svg(lineage_svg(tree, children), out)
    output.stderr.print(f"wrote {escape(str(out))}")


def _lineage_format(form: str | None, as_json: bool, out: Path | None) -> str:
    if as_json and form not in (None, "json"):
        raise errors.ConflictingArgumentsError(f"--json and --format {form} ask for different outputs")
    chosen = form or ("json" if as_json else "text")
    if out is not None and chosen == "text":
        raise errors.ConflictingArgumentsError(
            "--out writes a JSON document; the text tree is for the terminal",
            hint="Add --format json or --format cyclonedx, or redirect the tree: lorahub lineage NAME > tree.txt",
        )
    return chosen

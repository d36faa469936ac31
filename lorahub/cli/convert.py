"""``lorahub convert IN OUT --to FORMAT`` and ``lorahub resize IN OUT --rank N | --energy E``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape

from lorahub.cli import output
from lorahub.cli.context import HubContext, pass_hub_context

if TYPE_CHECKING:
    from lorahub.adapters.convert import ConversionReport
    from lorahub.sdk.exporting import ConvertResult, Dtype
    from lorahub.sdk.hub import Hub

_TARGETS = ["kohya", "diffusers", "peft", "comfyui", "bfl-control", "full"]
_DTYPES = click.Choice(["fp16", "bf16", "fp32"])


CATALOGUE = click.option(
    "--catalogue/--no-catalogue",
    default=None,
    help="Add the output as a new signed version derived from SOURCE (default: when SOURCE is a catalogued name).",
)


@click.command("convert")
@click.argument("source")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--to", "target", type=click.Choice(_TARGETS), help="Output layout (peft: a folder).")
@click.option(
    "--repair",
    is_flag=True,
    help="Instead of converting, write a copy whose misnamed keys (inspect's misnamed-keys) carry the names loaders "
    "expect; tensors unchanged, ΔW checked.",
)
@click.option("--dtype", type=_DTYPES, help="Storage dtype (default: the source's).")
@click.option("--lossy", is_flag=True, help="Allow LoHa/LoKr/full/OFT/DoRA… → LoRA by truncated SVD (error reported).")
@click.option("--rank", type=click.IntRange(min=1), help="Rank of layers converted by SVD (default: their own, or 32).")
@click.option(
    "--base",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Base checkpoint (.safetensors) for kinds whose ΔW depends on the base weight (GLoRA, OFT, IA3, DoRA).",
)
@click.option("--no-check", is_flag=True, help="Skip recomputing ΔW of input and output (not recommended).")
@CATALOGUE
@click.option("--json", "as_json", is_flag=True)
@pass_hub_context
def convert_command(
    ctx: HubContext,
    *,
    source: str,
    out: Path,
    target: str | None,
    repair: bool,
    dtype: Dtype | None,
    lossy: bool,
    rank: int | None,
    base: Path | None,
    no_check: bool,
    catalogue: bool | None,
    as_json: bool,
) -> None:
    """Convert an adapter, and prove it: ΔW of every module is recomputed and the largest error reported.

    SOURCE is a catalogued NAME[@V] (read from its verified blob; the output becomes its next signed version,
    converted from it), a .safetensors file, a PEFT adapter folder, or a pickled .ckpt/.pt/.bin that passes the opcode
    scan. Conversions that cannot be exact are refused (error[conversion-refused]) and nothing is written, unless
    --lossy.

    --repair (without --to) fixes names instead: keys that look like a known layout with a naming error (a separator
    changed, a prefix doubled or missing, a suffix spelled another way, wrong case) are renamed as loaders expect,
    when that is unambiguous; nothing else changes. Convert the repaired file afterwards if you need another layout.
    """
    from lorahub.adapters.convert import convert as convert_file

    if repair:
        _repair(ctx, source, out, target=target, options=(dtype, lossy, rank, base), check=not no_check,
                catalogue=catalogue, as_json=as_json)  # fmt: skip
        return
    if target is None:
        raise click.UsageError("--to is required (or --repair to fix misnamed keys)")

    result = _run(
        ctx, source, catalogue,
        via_hub=lambda hub: hub.convert(source, out, to=target, dtype=dtype, check=not no_check, lossy=lossy,
                                        rank=rank, base=base, catalogue=catalogue),
        direct=lambda: convert_file(source, out, to=target, dtype=dtype, check=not no_check,  # type: ignore[arg-type]
                                    lossy=lossy, rank=rank, base=base),
        out=out,
    )  # fmt: skip
    report = _report_unless_json(result, as_json)
    if report is None:
        return
    output.stdout.print(
        f"converted {escape(str(source))} ({report.source_format}, {report.family}) → {escape(str(out))} ({target}): "
        f"{report.modules} modules"
    )
    if report.lossy:
        ranks = sorted(set(report.ranks.values()))
        output.stdout.print(
            f"lossy: {len(report.lossy)} module(s) converted by truncated SVD at rank {', '.join(map(str, ranks))}"
        )
    if report.rslora_alpha:
        output.stdout.print(
            f"rsLoRA: {len(report.rslora_alpha)} module(s) written with the equivalent alpha·√rank ({target} has no "
            "rsLoRA flag; scale alpha/√rank unchanged)"
        )
    if not no_check:
        output.stdout.print(
            f"ΔW check: max abs error {report.max_abs_error:.3g}, max rel error {report.max_rel_error:.3g}"
        )
        worst = sorted(report.per_module.items(), key=lambda item: -item[1][1])[:5] if report.lossy else []
        for name, (absolute, relative) in worst:
            output.stdout.print(f"  {escape(name)}: abs {absolute:.3g}, rel {relative:.3g}")
    _print_catalogued(result)


def _report_unless_json(result: Any, as_json: bool) -> ConversionReport | None:
    """The conversion report to render, or None once it was printed as JSON (with what was catalogued)."""
    from lorahub.adapters.convert import ConversionReport
    from lorahub.sdk.exporting import report_dict

    report = result.report
    assert isinstance(report, ConversionReport)
    if as_json:
        output.print_json(report_dict(report) | {k: v for k, v in result.as_dict().items() if k != "report"})
        return None
    return report


def _repair(
    ctx: HubContext, source: str, out: Path, *, target: str | None, options: tuple[object, ...], check: bool,
    catalogue: bool | None, as_json: bool,
) -> None:  # fmt: skip
    from lorahub.adapters.repair import repair as repair_file

    if target is not None or any(option not in (None, False) for option in options):
        raise click.UsageError("--repair keeps the layout and the tensors: drop --to/--dtype/--lossy/--rank/--base")
    result = _run(
        ctx, source, catalogue,
        via_hub=lambda hub: hub.repair(source, out, catalogue=catalogue, check=check),
        direct=lambda: repair_file(source, out, check=check),
        out=out,
    )  # fmt: skip
    report = _report_unless_json(result, as_json)
    if report is None:
        return
    output.stdout.print(
        f"repaired {escape(str(source))} ({report.source_format}) → {escape(str(out))} ({report.target}): "
        f"{len(report.renamed)} key(s) renamed, {report.modules} module(s) a loader reads"
    )
    for old, new in list(report.renamed.items())[:3]:
        output.stdout.print(f"  {escape(old)} → {escape(new)}")
    if len(report.renamed) > 3:
        output.stdout.print(f"  … and {len(report.renamed) - 3} more (--json lists them all)")
    if report.unmapped:
        output.stdout.print(f"[yellow]{len(report.unmapped)} key(s) still match no layout[/]")
    if check:
        output.stdout.print(
            f"ΔW check: max abs error {report.max_abs_error:.3g}, max rel error {report.max_rel_error:.3g}"
        )
    _print_catalogued(result)


@click.command("resize")
@click.argument("source")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--rank", type=click.IntRange(min=1), help="New rank of every layer.")
@click.option("--energy", type=click.FloatRange(0.0, 1.0, min_open=True), help="Keep this share of Σσ² per layer.")
@click.option("--dtype", type=_DTYPES, help="Storage dtype (default: the source's).")
@CATALOGUE
@click.option("--json", "as_json", is_flag=True)
@pass_hub_context
def resize_command(
    ctx: HubContext, *, source: str, out: Path, rank: int | None, energy: float | None, dtype: Dtype | None,
    catalogue: bool | None, as_json: bool,
) -> None:  # fmt: skip
    """Reduce a LoRA's rank by truncated SVD (through QR of the factors; exact singular values), with the energy
    kept and the ΔW error of every module reported. The output keeps the source's naming; a catalogued SOURCE's
    output becomes its next signed version, resized from it."""
    from lorahub.adapters.resize import ResizeReport
    from lorahub.adapters.resize import resize as resize_file
    from lorahub.sdk.exporting import resize_dict

    result = _run(
        ctx, source, catalogue,
        via_hub=lambda hub: hub.resize(source, out, rank=rank, energy=energy, dtype=dtype, catalogue=catalogue),
        direct=lambda: resize_file(source, out, rank=rank, energy=energy, dtype=dtype),
        out=out,
    )  # fmt: skip
    report = result.report
    assert isinstance(report, ResizeReport)
    if as_json:
        output.print_json(resize_dict(report) | {k: v for k, v in result.as_dict().items() if k != "report"})
        return
    ranks = sorted({layer.rank_after for layer in report.per_module.values()})
    shown = ", ".join(map(str, ranks[:8])) + ("…" if len(ranks) > 8 else "")
    output.stdout.print(
        f"resized {escape(str(source))} → {escape(str(out))} ({report.target}): {report.modules} modules, rank {shown}"
    )
    output.stdout.print(
        f"kept energy ≥ {report.min_kept_energy:.4f}; ΔW max abs error {report.max_abs_error:.3g}, "
        f"max rel error {report.max_rel_error:.3g}"
    )
    _print_catalogued(result)


def _run(
    ctx: HubContext,
    source: str,
    catalogue: bool | None,
    *,
    via_hub: Callable[[Hub], ConvertResult],
    direct: Callable[[], Any],
    out: Path,
) -> ConvertResult:
    """A catalogued name (or --catalogue) goes through the home; a plain file conversion opens none."""
    from lorahub.sdk.exporting import ConvertResult
    from lorahub.sdk.refs import is_catalogue_ref

    if catalogue or is_catalogue_ref(source):
        return via_hub(ctx.hub)
    return ConvertResult(direct(), out)


def _print_catalogued(result: ConvertResult) -> None:
    if result.version is None or result.parent is None:
        return
    how = "already catalogued as" if result.reused else "catalogued as"
    output.stdout.print(f"{how} {escape(result.version.ref)} (from {escape(result.parent.ref)})")

"""``lorahub convert IN OUT --to FORMAT`` and ``lorahub resize IN OUT --rank N | --energy E``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from lorahub.cli import _output

_TARGETS = ["kohya", "diffusers", "peft", "comfyui", "full"]
_DTYPES = click.Choice(["fp16", "bf16", "fp32"])


@click.command("convert")
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--to", "target", type=click.Choice(_TARGETS), required=True, help="Output layout (peft: a folder).")
@click.option("--dtype", type=_DTYPES, help="Storage dtype (default: the source's).")
@click.option("--lossy", is_flag=True, help="Allow LoHa/LoKr/full/OFT/DoRA… → LoRA by truncated SVD (error reported).")
@click.option("--rank", type=click.IntRange(min=1), help="Rank of layers converted by SVD (default: their own, or 32).")
@click.option(
    "--base",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Base checkpoint (.safetensors) for kinds whose ΔW depends on the base weight (GLoRA, OFT, IA3, DoRA).",
)
@click.option("--no-check", is_flag=True, help="Skip recomputing ΔW of input and output (not recommended).")
@click.option("--json", "as_json", is_flag=True)
def convert_command(
    *,
    source: Path,
    out: Path,
    target: str,
    dtype: str | None,
    lossy: bool,
    rank: int | None,
    base: Path | None,
    no_check: bool,
    as_json: bool,
) -> None:
    """Convert an adapter, and prove it: ΔW of every module is recomputed and the largest error reported.

    SOURCE is a .safetensors file, a PEFT adapter folder, or a pickled .ckpt/.pt/.bin that passes the opcode scan.
    Conversions that cannot be exact are refused (error[conversion-refused]) and nothing is written, unless --lossy.
    """
    from lorahub.adapters.convert import convert

    report = convert(
        source,
        out,
        to=target,  # type: ignore[arg-type]
        dtype=dtype,  # type: ignore[arg-type]
        check=not no_check,
        lossy=lossy,
        rank=rank,
        base=base,
    )
    if as_json:
        data: dict[str, Any] = dataclasses.asdict(report)
        data["per_module"] = {name: {"abs": a, "rel": r} for name, (a, r) in report.per_module.items()}
        _output.print_json(data)
        return
    _output.stdout.print(
        f"converted {escape(str(source))} ({report.source_format}, {report.family}) → {escape(str(out))} ({target}): "
        f"{report.modules} modules"
    )
    if report.lossy:
        ranks = sorted(set(report.ranks.values()))
        _output.stdout.print(
            f"lossy: {len(report.lossy)} module(s) converted by truncated SVD at rank {', '.join(map(str, ranks))}"
        )
    if not no_check:
        _output.stdout.print(
            f"ΔW check: max abs error {report.max_abs_error:.3g}, max rel error {report.max_rel_error:.3g}"
        )
        worst = sorted(report.per_module.items(), key=lambda item: -item[1][1])[:5] if report.lossy else []
        for name, (absolute, relative) in worst:
            _output.stdout.print(f"  {escape(name)}: abs {absolute:.3g}, rel {relative:.3g}")


@click.command("resize")
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--rank", type=click.IntRange(min=1), help="New rank of every layer.")
@click.option("--energy", type=click.FloatRange(0.0, 1.0, min_open=True), help="Keep this share of Σσ² per layer.")
@click.option("--dtype", type=_DTYPES, help="Storage dtype (default: the source's).")
@click.option("--json", "as_json", is_flag=True)
def resize_command(
    *, source: Path, out: Path, rank: int | None, energy: float | None, dtype: str | None, as_json: bool
) -> None:
    """Reduce a LoRA's rank by truncated SVD (through QR of the factors; exact singular values), with the energy
    kept and the ΔW error of every module reported. The output keeps the source's naming."""
    from lorahub.adapters.resize import resize

    report = resize(source, out, rank=rank, energy=energy, dtype=dtype)
    if as_json:
        data: dict[str, Any] = {
            "modules": report.modules,
            "output": report.output,
            "source_format": report.source_format,
            "target": report.target,
            "min_kept_energy": report.min_kept_energy,
            "max_abs_error": report.max_abs_error,
            "max_rel_error": report.max_rel_error,
            "per_module": {name: dataclasses.asdict(layer) for name, layer in report.per_module.items()},
        }
        _output.print_json(data)
        return
    ranks = sorted({layer.rank_after for layer in report.per_module.values()})
    shown = ", ".join(map(str, ranks[:8])) + ("…" if len(ranks) > 8 else "")
    _output.stdout.print(
        f"resized {escape(str(source))} → {escape(str(out))} ({report.target}): {report.modules} modules, rank {shown}"
    )
    _output.stdout.print(
        f"kept energy ≥ {report.min_kept_energy:.4f}; ΔW max abs error {report.max_abs_error:.3g}, "
        f"max rel error {report.max_rel_error:.3g}"
    )

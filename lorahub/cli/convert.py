"""``lorahub convert IN OUT --to FORMAT``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from lorahub.cli import _output


@click.command("convert")
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--to", "target", type=click.Choice(["kohya", "diffusers"]), required=True, help="Output layout.")
@click.option("--dtype", type=click.Choice(["fp16", "bf16", "fp32"]), help="Storage dtype (default: the source's).")
@click.option("--no-check", is_flag=True, help="Skip recomputing ΔW of input and output (not recommended).")
@click.option("--json", "as_json", is_flag=True)
def convert_command(*, source: Path, out: Path, target: str, dtype: str | None, no_check: bool, as_json: bool) -> None:
    """Convert an adapter exactly, and prove it: ΔW of every module is recomputed and the largest error reported.

    Conversions that cannot be exact are refused (error[conversion-refused]) and nothing is written.
    """
    from lorahub.adapters.convert import convert

    report = convert(source, out, to=target, dtype=dtype, check=not no_check)  # type: ignore[arg-type]
    if as_json:
        data: dict[str, Any] = dataclasses.asdict(report)
        data["per_module"] = {name: {"abs": a, "rel": r} for name, (a, r) in report.per_module.items()}
        _output.print_json(data)
        return
    _output.stdout.print(
        f"converted {escape(str(source))} ({report.source_format}, {report.family}) → {escape(str(out))} ({target}): "
        f"{report.modules} modules"
    )
    if not no_check:
        _output.stdout.print(
            f"ΔW check: max abs error {report.max_abs_error:.3g}, max rel error {report.max_rel_error:.3g}"
        )

"""``lorahub bake BASE A[:w] … --out OUT``: BASE a checkpoint file (OUT a file) or a pipeline (OUT a folder)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape

from lorahub.cli import output
from lorahub.cli.context import HubContext, pass_hub_context

COMPONENTS = ("unet", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3")


@click.command("bake")
@click.argument("base")
@click.argument("adapters", nargs=-1, required=True)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="The baked checkpoint file; for a pipeline BASE, the new pipeline folder (absent or empty).",
)
@click.option("--use", type=click.Choice(["commercial", "non-commercial", "research"]), help="Intended use of it.")
@click.option("--base-license", help="The base model's licence id, for the licence check.")
@click.option("--accept-uncertain", is_flag=True, help="Go ahead when the licence answer is uncertain (audited).")
@click.option(
    "--component",
    "components",
    multiple=True,
    type=click.Choice(COMPONENTS),
    help="Bake only this component's layers (repeatable), e.g. for a diffusers unet/ file; others are skipped "
    "(in a pipeline, left as they are).",
)
@click.option("--json", "as_json", is_flag=True)
@pass_hub_context
def bake_command(
    context: HubContext,
    *,
    base: str,
    adapters: tuple[str, ...],
    out: Path,
    use: str | None,
    base_license: str | None,
    accept_uncertain: bool,
    components: tuple[str, ...],
    as_json: bool,
) -> None:
    """Merge catalogued ADAPTERS (NAME or NAME@V, each with an optional :WEIGHT) into BASE.

    The result is written to --out.

    BASE is an SD 1.x/2.x/SDXL single file (LDM/SGM names), a FLUX.1 (BFL names) or SD3/3.5 (Stability's names)
    single file, a diffusers component file (unet/, text_encoder/, transformer/), or a whole diffusers pipeline: a
    folder, a Hugging Face cache snapshot, or a repo id ORG/NAME[@REV] found in the local cache (never downloaded).
    A pipeline is written to --out as a new pipeline folder: each component the adapters change is baked, every
    other file copied, and the cache left untouched.
    The base is streamed tensor by tensor (fp32 arithmetic, its dtypes kept); the licences are checked first and
    every adapter is verified before use. Nothing is written on any refusal.
    """
    result = context.hub.bake(
        base,
        list(adapters),
        out,
        use=use,
        base_license=base_license,
        accept_uncertain=accept_uncertain,
        components=list(components) or None,
    )
    if as_json:
        output.print_json(result.as_dict())
        return
    report = result.report
    output.stdout.print(
        f"baked {len(report.adapters)} adapter(s), {report.layers} layers, into {escape(str(out))} "
        f"({report.layout}, {report.family}): {report.changed_tensors} of {report.tensors} tensors changed "
        f"in {report.seconds:.1f} s"
    )
    if report.revision:
        output.stdout.print(f"  base {escape(report.base)}@{report.revision}")
    for adapter in report.adapters:
        label = f"{adapter['name']}@{adapter['version']}"
        output.stdout.print(f"  {escape(label)} × {adapter['weight']:g}  ({adapter['layers']} layers)")
    if report.skipped_layers:
        output.stdout.print(f"  skipped {len(report.skipped_layers)} layers of other components")
    for component in report.components:
        output.stdout.print(f"  {escape(component['file'])}  sha256 {component['output_sha256']}")
    for name in report.skipped_files:
        output.stdout.print(f"  left out {escape(name)} (bake writes safetensors only)")
    output.stdout.print(f"base sha256 {report.base_sha256}\nout  sha256 {report.output_sha256}")
    output.stdout.print(f"licence: {result.license.verdict}" + (" (accepted)" if result.accepted_uncertain else ""))

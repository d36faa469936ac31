"""``lorahub generate``."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape

from lorahub.cli import output
from lorahub.cli.combine import USES
from lorahub.cli.context import HubContext, pass_hub_context


def _size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise click.BadParameter("write WIDTHxHEIGHT, e.g. 512x512", param_hint="--size")
    return int(width), int(height)


@click.command("generate")
@click.option(
    "--base", required=True, help="Pipeline folder, or a Hugging Face repo id ORG/NAME[@REV] in the local cache."
)
@click.option("--prompt", required=True, help='The prompt; adapters as A1111 tags: "a cat <lora:name:0.7>".')
@click.option("--negative", help="Negative prompt (pipelines that take one).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--size", help="WIDTHxHEIGHT (default: the pipeline's).")
@click.option("--guidance", type=float, help="Guidance scale (default: the pipeline's).")
@click.option("--use", type=USES, help="The declared use; the licence engine is asked before loading.")
@click.option("--accept-uncertain", is_flag=True, help="Go ahead when the licence answer is uncertain (audited).")
@click.option("--base-license", help="The base model's licence identifier, recorded in the credentials.")
@click.option("--key", help="Identity to sign with (default: the home's default).")
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False), help="PNG, JPEG or WebP.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_hub_context
def generate_command(
    ctx: HubContext, *, base: str, prompt: str, negative: str | None, seed: int, steps: int, size: str | None,
    guidance: float | None, use: str | None, accept_uncertain: bool, base_license: str | None, key: str | None,
    out: Path, as_json: bool,
) -> None:  # fmt: skip
    """Generate an image with a local diffusers pipeline and the prompt's adapters, and sign it with C2PA Content
    Credentials naming the base model and every adapter (lorahub provenance inspect reads them back)."""
    result = ctx.hub.generate(
        base, prompt, out=out, negative_prompt=negative, seed=seed, steps=steps, size=_size(size),
        guidance=guidance, use=use, accept_uncertain=accept_uncertain, base_license=base_license, key=key,
    )  # fmt: skip
    if as_json:
        output.print_json(result.as_dict())
        return
    names = ", ".join(f"{a['ref']}:{a['weight']:g}" for a in result.adapters) or "no adapters"
    output.stdout.print(f"generated {escape(str(out))} with {escape(names)}; signed ({result.image.format})")
    output.stdout.print(f"prompt: {escape(result.prompt)}")

"""``lorahub dev``: tools for demos and tests."""

from __future__ import annotations

from pathlib import Path

import click

from lorahub.cli import output


@click.group("dev")
def dev_group() -> None:
    """Developer tools: example files and tiny models, made offline."""


@dev_group.command("example-lora")
@click.argument("out", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--rank", default=4, show_default=True, type=click.IntRange(1, 1024))
@click.option("--alpha", default=2.0, show_default=True, type=float)
@click.option("--seed", default=0, show_default=True, type=int)
def example_lora(out: Path, rank: int, alpha: float, seed: int) -> None:
    """Write a kohya SD 1.5 LoRA with random weights and kohya training metadata."""
    from lorahub.dev.example_lora import write_example_lora

    write_example_lora(out, rank=rank, alpha=alpha, seed=seed, name=out.stem)
    output.stderr.print(f"wrote {out}")


@dev_group.command("example-dataset")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def example_dataset(directory: Path) -> None:
    """Write four captioned images and a sources.csv; the last image opts out of data mining in its own XMP."""
    from lorahub.dev.example_dataset import write_example_dataset

    sources = write_example_dataset(directory)
    output.stderr.print(f"wrote {directory} (sources: {sources})")


@dev_group.command("tiny-pipeline")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--family",
    type=click.Choice(["sd1", "sdxl", "flux1", "flux2", "qwen-image"]),
    default="sd1",
    show_default=True,
    help="Base geometry.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the random weights.")
def tiny_pipeline(directory: Path, family: str, seed: int) -> None:
    """Write a tiny diffusers pipeline (random weights, local tokenizer) that loads and trains offline in seconds."""
    from lorahub.dev.tiny_pipeline import write_tiny_pipeline

    write_tiny_pipeline(directory, family=family, seed=seed)  # type: ignore[arg-type]  # click.Choice checked it
    output.stderr.print(f"wrote {directory} ({family} tiny pipeline, seed {seed})")

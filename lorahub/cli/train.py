"""``lorahub train``: train a LoRA on a diffusers pipeline folder; every checkpoint is catalogued with its lineage."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape

from lorahub.cli import output
from lorahub.cli.context import HubContext, pass_hub_context

if TYPE_CHECKING:
    from lorahub.sdk.training import TrainResult


def _targets(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...]:
    return tuple(t.strip() for t in value.split(",") if t.strip()) if value else ()


@click.command("train")
@click.option(
    "--base",
    required=True,
    help="diffusers pipeline folder (SD 1.x/2.x, SDXL, FLUX.1), or a Hugging Face repo id ORG/NAME[@REV] already in "
    "the local cache (never downloaded).",
)
@click.option(
    "--data",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="Folder of images with caption .txt files, or a JSONL of {image, caption} lines.",
)
@click.option("--trigger", help="Trigger words, put first in every caption that lacks them.")
@click.option("--name", help="Adapter name in the catalog (default: the data folder's name).")
@click.option("--license", "license_id", help="The adapter's licence (SPDX id, LicenseRef-… or alias).")
@click.option("--rank", type=click.IntRange(1, 1024), default=4, show_default=True)
@click.option("--alpha", type=float, help="LoRA alpha (default: the rank, scale 1).")
@click.option(
    "--targets", callback=_targets, help="Comma-separated module-name suffixes [default: to_q,to_k,to_v,to_out.0]."
)
@click.option("--steps", type=click.IntRange(1), default=200, show_default=True, help="Optimizer steps in all.")
@click.option("--lr", type=float, default=1e-4, show_default=True)
@click.option("--scheduler", type=click.Choice(["cosine", "constant"]), default="constant", show_default=True)
@click.option("--warmup", type=click.IntRange(0), default=0, show_default=True, help="Warm-up steps.")
@click.option("--batch", type=click.IntRange(1), default=1, show_default=True)
@click.option("--grad-accum", type=click.IntRange(1), default=1, show_default=True)
@click.option("--resolution", type=click.IntRange(8), default=512, show_default=True)
@click.option(
    "--mixed-precision",
    type=click.Choice(["bf16", "fp16", "no"]),
    default="bf16",
    show_default=True,
    help="On CPU the run falls back to fp32 and says so.",
)
@click.option("--gradient-checkpointing", is_flag=True)
@click.option("--cache-latents", is_flag=True, help="Encode every image once (the VAE is then freed).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--save-every",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Catalogue a checkpoint version every N steps (0: only the final one).",
)
@click.option("--log-every", type=click.IntRange(1), default=10, show_default=True, help="Loss-curve resolution.")
@click.option("--prior", type=click.Path(exists=True, path_type=Path), help="Prior-preservation (class) images.")
@click.option("--prior-weight", type=float, default=1.0, show_default=True)
@click.option(
    "--sources",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Sources CSV/JSON for the consent manifest (lorahub dataset scan).",
)
@click.option(
    "--manifest",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An existing consent manifest of --data (checked against the images).",
)
@click.option(
    "--sample-prompts",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Prompts to sample during training, one per line (kohya's options: --n NEG --s STEPS --l CFG --d SEED "
    "--w W --h H); images signed beside the run.",
)
@click.option(
    "--sample-every",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Sample the prompts every N steps (0: only at the end).",
)
@click.option(
    "--quantize",
    "quantization",
    type=click.Choice(["int8", "nf4"]),
    help="Load the FLUX transformer's frozen weights quantised (bitsandbytes, CUDA): FLUX LoRAs in 24 GB.",
)
@click.option("--resume", help="Continue a run from a checkpoint version NAME@V (or its state folder).")
@click.option("--device", help="torch device [default: cuda when available, else cpu].")
@click.option("--json", "as_json", is_flag=True, help="Print the result (versions, lineage) as JSON.")
@pass_hub_context
def train_command(context: HubContext, /, **options: Any) -> None:  # fmt: skip
    """Train a LoRA adapter and catalogue it with a signed card that records its lineage.

    The dataset's consent manifest is built (or read): opted-out images are excluded and recorded, and the home
    policy may refuse images of unknown consent. The card's `training` field holds the base and dataset digests,
    every setting, seed, software versions, hardware, times and the loss curve; the file's header carries the
    same facts as kohya `ss_*` and `modelspec.*` keys.
    """
    from lorahub.sdk.training import train

    as_json = options.pop("as_json")
    paths = {key: options.pop(key) for key in ("base", "data", "prior", "sources", "manifest", "resume")}
    named = {key: options.pop(key) for key in ("name", "trigger", "device")} | {"license": options.pop("license_id")}
    options["targets"] = options["targets"] or ()
    if options["sample_prompts"] is None:
        del options["sample_prompts"]
    with _Bar(disabled=as_json) as bar:
        result = train(paths.pop("base"), paths.pop("data"), hub=context.hub, on_step=bar.update, **paths, **named,
                       **options)  # fmt: skip
    if as_json:
        output.print_json(result.as_dict())
    else:
        _render(result)


class _Bar:
    """A rich progress bar (loss, it/s, ETA) on stderr: the SDK only calls back with each step."""

    def __init__(self, *, disabled: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (
            TextColumn("training"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[rate]} it/s"),
            TimeRemainingColumn(),
        )
        self.progress = Progress(*columns, console=output.stderr, transient=True, disable=disabled)
        self.task = self.progress.add_task("train", total=None, loss="-", rate="-")
        self.speed: float | None = None
        self.loss: float | None = None

    def __enter__(self) -> _Bar:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def update(self, step: Any) -> None:
        """Smoothed (exponential moving average over ~10 steps) so the numbers can be read while they change."""
        if step.seconds > 0:
            speed = 1.0 / step.seconds
            self.speed = speed if self.speed is None else 0.9 * self.speed + 0.1 * speed
        self.loss = step.loss if self.loss is None else 0.9 * self.loss + 0.1 * step.loss
        rate = f"{self.speed:.2f}" if self.speed is not None else "-"
        self.progress.update(self.task, completed=step.step, total=step.total, loss=f"{self.loss:.4f}", rate=rate)


def _render(result: TrainResult) -> None:
    out = output.stdout
    training = result.training
    for version in result.versions:
        out.print(f"catalogued [bold]{escape(version.name)}@{version.version}[/]  {version.content_digest[:16]}…")
    dataset = training["dataset"]
    excluded = dataset["excluded"]
    out.print(
        f"run {result.run_id}: {training['steps']['done']} steps on {dataset['images']} image(s), "
        f"consent {dataset['consent']['status']}, {len(excluded)} excluded"
    )
    for item in excluded:
        out.print(f"[yellow]excluded[/] {escape(item['path'])}: {escape('; '.join(item['reasons']))}")
    points = training["loss_curve"]["points"]
    if points:
        out.print(f"loss {points[0][1]} (step {points[0][0]}) → {points[-1][1]} (step {points[-1][0]})")
    for sample in result.samples:
        text = f"sample step {sample['step']}: {sample['prompt']} → {sample['path']}"
        out.print(escape(text), soft_wrap=True)  # a path cut in two cannot be opened
    for note in result.notes:
        out.print(f"[dim]note: {escape(note)}[/]")

"""``lorahub train``: train a LoRA on a diffusers pipeline folder; every checkpoint is catalogued with its lineage."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource
from rich.markup import escape

from lorahub.cli import output
from lorahub.cli.context import HubContext, pass_hub_context

if TYPE_CHECKING:
    from lorahub.sdk.training import TrainResult


def _targets(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...]:
    return tuple(t.strip() for t in value.split(",") if t.strip()) if value else ()


@click.command("train")
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A lorahub settings file (TOML: the TrainConfig fields and base, data, name, …; docs/training.md). "
    "Options given here replace its values.",
)
@click.option(
    "--from-kohya",
    "kohya",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A kohya sd-scripts training config (.toml, or the kohya_ss GUI's .json); keys lorahub cannot map are "
    "listed in the run's notes.",
)
@click.option("--like", help="Start from the settings a catalogued adapter NAME[@V] was trained with.")
@click.option("--print-config", is_flag=True, help="Print the resulting settings as a --config file; train nothing.")
@click.option(
    "--base",
    help="diffusers pipeline folder (SD 1.x/2.x, SDXL, FLUX.1), or a Hugging Face repo id ORG/NAME[@REV] already in "
    "the local cache (never downloaded).",
)
@click.option(
    "--data",
    type=click.Path(exists=True, path_type=Path),
    help="Folder of images with caption .txt/.caption files (N_name subfolders: repeat N times), or a JSONL of "
    "{image, caption} lines.",
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
@click.option("--gradient-checkpointing/--no-gradient-checkpointing", default=False)
@click.option(
    "--cache-latents/--no-cache-latents", default=False, help="Encode every image once (the VAE is then freed)."
)
@click.option("--buckets/--no-buckets", default=False, help="Aspect-ratio buckets (kohya's rules).")
@click.option("--bucket-step", type=click.IntRange(8), default=64, show_default=True)
@click.option("--min-bucket", type=click.IntRange(8), help="Shortest bucket side [default: resolution / 2].")
@click.option("--max-bucket", type=click.IntRange(8), help="Longest bucket side [default: resolution × 2].")
@click.option("--bucket-no-upscale/--bucket-upscale", default=False, help="Never enlarge an image to a bucket.")
@click.option("--random-crop/--centre-crop", default=False, help="Crop at a random place each step.")
@click.option("--shuffle-captions/--no-shuffle-captions", default=False, help="Shuffle comma-separated tags.")
@click.option("--keep-tokens", type=click.IntRange(0), default=0, show_default=True, help="Tags kept first.")
@click.option("--caption-dropout", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True)
@click.option("--noise-offset", type=click.FloatRange(0), default=0.0, show_default=True)
@click.option("--min-snr-gamma", type=click.FloatRange(0, min_open=True), help="Min-SNR-γ loss weighting (e.g. 5).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--save-every",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Catalogue a checkpoint version every N steps (0: only the final one).",
)
@click.option("--log-every", type=click.IntRange(1), default=10, show_default=True, help="Loss-curve resolution.")
@click.option(
    "--network",
    type=click.Choice(["lora", "lokr", "loha", "dora"]),
    default="lora",
    show_default=True,
    help="What to train on the denoiser (PEFT's tuners; LoKr/LoHa/DoRA files are LyCORIS/kohya-named).",
)
@click.option("--lokr-factor", type=int, default=-1, show_default=True, help="LoKr's factor (-1: balanced).")
@click.option(
    "--train-text-encoder/--no-train-text-encoder", default=False, help="A LoRA on the CLIP text encoder(s) too."
)
@click.option(
    "--text-encoder-lr",
    type=click.FloatRange(0, min_open=True),
    help="The text encoders' learning rate [default: --lr].",
)
@click.option("--ema-decay", type=float, help="Save an exponential moving average of the weights (e.g. 0.999).")
@click.option(
    "--processes",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Data-parallel processes (Accelerate); under accelerate launch the launcher's count is used.",
)
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
    help="Load the FLUX transformer's frozen weights quantised (int8: torchao, any device; nf4: bitsandbytes, CUDA):"
    " FLUX LoRAs in 24 GB.",
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
    from lorahub.sdk.train_settings import train_from, training_settings

    ctx = click.get_current_context()
    given = {key: value for key, value in options.items() if ctx.get_parameter_source(key) != ParameterSource.DEFAULT}
    given = {("license" if key == "license_id" else key): value for key, value in given.items()}
    as_json, print_config = given.pop("as_json", False), given.pop("print_config", False)
    layers = {key: given.pop(key, None) for key in ("config_file", "kohya", "like")}
    if print_config:
        settings = training_settings(**layers, hub=context.hub, given=given)
        click.echo(settings.to_toml(), nl=False)
        return
    with _Bar(disabled=as_json) as bar:
        result = train_from(**layers, hub=context.hub, on_step=bar.update, **given)
    if not result.main_process:
        return  # another process of a data-parallel run: the main one reports
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

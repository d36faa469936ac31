"""Samples during training: prompts rendered with the adapter as it is at a step, to watch a run learn.

Prompts use kohya sd-scripts' prompt-file syntax, one per line: ``a cat, sks style --n blurry --s 20 --l 7.5
--d 42 --w 512 --h 768`` (``--n`` negative prompt, ``--s`` sampling steps, ``--l`` guidance scale, ``--d`` seed,
``--w``/``--h`` size); blank lines and lines starting with ``#`` are skipped. An option kohya knows and lorahub does
not (``--ss`` sampler, ``--cfgr``…) is refused rather than silently dropped: the image would not be the one asked for.

The images come from the training pipeline's own components (the denoiser with its LoRA, the VAE, the pipeline's
scheduler): the text encoders are freed once captions are cached, so :class:`Sampler` encodes the sample prompts
while they are still loaded, and the trainer keeps the VAE when there are samples. A sample's seed is its ``--d``,
else the run's seed plus the prompt's index: the same prompt gets the same noise at every step, so the images show
what the adapter changed, and a run repeated gives the same images. Sampling draws from its own generator (and
forks the global one), so a run with samples trains exactly as one without.

Signing the images and recording them is the SDK's (:mod:`lorahub.sdk.samples`).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorahub import errors

DEFAULT_SAMPLE_STEPS = 20
"""Sampling steps when a prompt has no ``--s`` (what ``lorahub generate`` uses)."""

OPTIONS: dict[str, tuple[str, type]] = {
    "n": ("negative", str),
    "s": ("steps", int),
    "l": ("guidance", float),
    "d": ("seed", int),
    "w": ("width", int),
    "h": ("height", int),
}
"""kohya's prompt option letter → (SamplePrompt field, type)."""

_OPTION = re.compile(r"^(?P<key>[a-z]+)\s+(?P<value>.+)$", re.IGNORECASE | re.DOTALL)
SIZE_MULTIPLE = 16
"""Sample sizes must divide by 16: the VAE downsamples by 8, and FLUX packs 2×2 latent patches."""


@dataclass(frozen=True)
class SamplePrompt:
    """One prompt line, parsed; None: the default (see :meth:`Sampler.settings`)."""

    prompt: str
    negative: str | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int | None = None
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class Sample:
    """One image made at a step, with the settings it was made with (what its Content Credentials record)."""

    index: int
    prompt: SamplePrompt
    image: Any
    """A PIL image."""
    seed: int
    steps: int
    width: int
    height: int
    guidance: float
    scheduler: str


def parse_prompts(lines: Sequence[str], *, resolution: int) -> tuple[SamplePrompt, ...]:
    """Every line parsed (blank and ``#`` lines skipped), or a :class:`~lorahub.errors.TrainingError` naming
    the bad line."""
    return tuple(parse_prompt(line, resolution=resolution) for line in prompt_lines(lines))


def prompt_lines(lines: Sequence[str]) -> Iterator[str]:
    for line in lines:
        text = line.strip()
        if text and not text.startswith("#"):
            yield text


def parse_prompt(line: str, *, resolution: int) -> SamplePrompt:
    """``prompt --x value …`` as kohya splits it (on `` --``)."""
    prompt, *options = (" " + line.strip()).split(" --")
    values: dict[str, Any] = {}
    for option in options:
        match = _OPTION.match(option.strip())
        key = match.group("key").lower() if match else option.strip()
        if match is None or key not in OPTIONS:
            raise errors.TrainingError(
                f"sample prompt {line!r}: unknown option --{key}",
                hint="Options: --n NEGATIVE, --s STEPS, --l GUIDANCE, --d SEED, --w WIDTH, --h HEIGHT.",
            )
        name, kind = OPTIONS[key]
        values[name] = _value(line, key, kind, match.group("value").strip())
    if not prompt.strip():
        raise errors.TrainingError(f"sample prompt {line!r} has no prompt before its options")
    for name in ("width", "height"):
        size = values.get(name, resolution)
        if size % SIZE_MULTIPLE:
            raise errors.TrainingError(
                f"sample prompt {line!r}: {name} {size} is not a multiple of {SIZE_MULTIPLE}",
                hint="Give --w/--h (or --resolution) as multiples of 16.",
            )
    return SamplePrompt(prompt.strip(), **values)


def _value(line: str, key: str, kind: type, text: str) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise errors.TrainingError(f"sample prompt {line!r}: --{key} {text!r} is not a {kind.__name__}") from None
    if kind is not str and (value < 0 or (key in "swh" and value < 1)):
        raise errors.TrainingError(f"sample prompt {line!r}: --{key} {text} is out of range")
    return value


def read_prompt_file(path: Path) -> tuple[str, ...]:
    """A prompts file's lines (UTF-8), as the setting records them."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise errors.TrainingError(f"cannot read the sample prompts {path}: {exc}") from None
    lines = tuple(prompt_lines(text.splitlines()))
    if not lines:
        raise errors.TrainingError(f"{path} holds no prompts", hint="One prompt per line; # starts a comment.")
    return lines


def sample_steps(total: int, every: int) -> Iterator[int]:
    """The steps at which a run with prompts samples: every ``every`` steps, and the last."""
    if every > 0:
        yield from range(every, total, every)
    yield total


class Sampler:
    """The sample prompts, encoded while the text encoders are loaded (or at each sampling when the text encoders
    train: the adapter changes them), and :meth:`images` to render them."""

    def __init__(self, trainer: Any, lines: Sequence[str]) -> None:
        """``trainer`` is the :class:`~lorahub.training.loop.Trainer` being built (typed loosely: the loop
        imports this module)."""
        self.trainer = trainer
        self.prompts = parse_prompts(lines, resolution=trainer.config.resolution)
        self.encoded: list[dict[str, Any]] | None = None
        if not trainer.text_encoders:
            with trainer.torch.no_grad():
                self.encoded = [self._encode(p) for p in self.prompts]
        if trainer.base.family == "flux1" and any(p.negative for p in self.prompts):
            trainer.notes.append("FLUX samples ignore --n negative prompts (the base is guidance-distilled)")

    def _encode(self, prompt: SamplePrompt) -> dict[str, Any]:
        """The pipeline call's text inputs: embeddings (and the negative prompt's, where the family has them)."""
        trainer = self.trainer
        pipe, device, family = trainer.pipe, trainer.device, trainer.base.family
        if family == "flux1":
            embeds, pooled, _ = pipe.encode_prompt(
                [prompt.prompt], prompt_2=None, device=device, max_sequence_length=trainer.flux_sequence_length
            )
            return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}
        negative = [prompt.negative] if prompt.negative is not None else None
        if family == "sdxl":
            embeds, negative_embeds, pooled, negative_pooled = pipe.encode_prompt(
                [prompt.prompt], device=device, num_images_per_prompt=1, do_classifier_free_guidance=True,
                negative_prompt=negative,
            )  # fmt: skip
            return {
                "prompt_embeds": embeds,
                "negative_prompt_embeds": negative_embeds,
                "pooled_prompt_embeds": pooled,
                "negative_pooled_prompt_embeds": negative_pooled,
            }
        embeds, negative_embeds = pipe.encode_prompt([prompt.prompt], device, 1, True, negative)
        return {"prompt_embeds": embeds, "negative_prompt_embeds": negative_embeds}

    def settings(self, index: int) -> tuple[int, int, int, int]:
        """Seed, steps, width and height of prompt ``index`` (its options, else the defaults)."""
        prompt, config = self.prompts[index], self.trainer.config
        seed = prompt.seed if prompt.seed is not None else config.seed + index
        steps = prompt.steps or DEFAULT_SAMPLE_STEPS
        return seed, steps, prompt.width or config.resolution, prompt.height or config.resolution

    def images(self) -> list[Sample]:
        """Every prompt rendered with the adapter as it is now (the denoiser in eval mode meanwhile)."""
        trainer = self.trainer
        torch, denoiser = trainer.torch, trainer.denoiser
        devices = [trainer.device] if trainer.device.type == "cuda" else []
        denoiser.eval()
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=devices):
                return [self._render(index) for index in range(len(self.prompts))]
        finally:
            denoiser.train()

    def _render(self, index: int) -> Sample:
        trainer = self.trainer
        torch, pipe, prompt = trainer.torch, trainer.pipe, self.prompts[index]
        seed, steps, width, height = self.settings(index)
        call = dict(self.encoded[index] if self.encoded is not None else self._encode(prompt))
        guidance = prompt.guidance if prompt.guidance is not None else _default_guidance(pipe)
        call |= {"num_inference_steps": steps, "width": width, "height": height, "output_type": "pil"}
        call["guidance_scale"] = guidance
        generator = torch.Generator(device=trainer.device).manual_seed(seed)
        mixed = trainer.precision.used != "no"
        with torch.autocast(trainer.device.type, dtype=trainer.weight_dtype, enabled=mixed):
            image = pipe(generator=generator, **call).images[0]
        scheduler = type(pipe.scheduler).__name__
        return Sample(index, prompt, image, seed, steps, width, height, guidance, scheduler)


def _default_guidance(pipe: Any) -> float:
    """The pipeline's own default guidance scale (7.5 for SD, 5 for SDXL, 3.5 for FLUX), recorded with the image."""
    return float(inspect.signature(type(pipe).__call__).parameters["guidance_scale"].default)

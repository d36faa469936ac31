"""Training settings: one frozen record, checked before anything heavy is loaded, and written into the card.

Every setting that changes the result is here, so the card's ``training.hyperparameters`` is simply this record.
Cards hold no floats (they canonicalise differently across languages), so :meth:`TrainConfig.card_dict` writes
them as strings: ``"0.0001"``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from lorahub import errors

Scheduler = Literal["cosine", "constant"]
MixedPrecision = Literal["bf16", "fp16", "no"]
Network = Literal["lora", "lokr", "loha", "dora"]
Quantization = Literal["int8", "nf4"]
SCHEDULERS: tuple[Scheduler, ...] = ("cosine", "constant")
MIXED_PRECISION: tuple[MixedPrecision, ...] = ("bf16", "fp16", "no")
NETWORKS: tuple[Network, ...] = ("lora", "lokr", "loha", "dora")
QUANTIZATIONS: tuple[Quantization, ...] = ("int8", "nf4")

DEFAULT_TARGETS: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
"""The attention projections: what diffusers' LoRA scripts and kohya's default network train in a UNet (and FLUX's
joint attention uses the same names for its image stream)."""
FLUX_EXTRA_TARGETS: tuple[str, ...] = ("add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")
"""FLUX's text-stream projections of the same attention layers, added to the default for FLUX bases."""

RESUMABLE_OVERRIDES = frozenset({"steps", "save_every", "log_every", "sample_every", "sample_prompts"})
"""What a resumed run may change: how far it goes and how often it reports (checkpoints, loss points, samples).
Everything else is the run's own."""


@dataclass(frozen=True)
class TrainConfig:
    """The hyperparameters of one run (defaults follow diffusers' ``train_text_to_image_lora.py`` where it has
    one: rank 4, alpha = rank, AdamW with weight decay 1e-2, clip 1.0; the learning rate is LoRA's usual 1e-4)."""

    rank: int = 4
    alpha: float | None = None
    """None: alpha = rank (scale 1), as diffusers' SD scripts hard-wire."""
    targets: tuple[str, ...] = ()
    """Module-name suffixes to wrap (peft ``target_modules``); empty: the attention projections."""
    steps: int = 200
    lr: float = 1e-4
    scheduler: Scheduler = "constant"
    warmup: int = 0
    batch: int = 1
    grad_accum: int = 1
    resolution: int = 512
    mixed_precision: MixedPrecision = "bf16"
    gradient_checkpointing: bool = False
    cache_latents: bool = False
    seed: int = 0
    save_every: int = 0
    """Catalogue a checkpoint version every N optimizer steps (0: only the final adapter)."""
    log_every: int = 10
    """A loss-curve point (the mean of the last N steps' losses) every N steps."""
    prior_weight: float = 1.0
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_epsilon: float = 1e-8
    # network: kind, text encoder, EMA, processes
    network: Network = "lora"
    """``lora``; ``dora`` (weight-decomposed LoRA); ``lokr`` or ``loha`` (LyCORIS' Kronecker and Hadamard products),
    each through PEFT's tuner (:mod:`lorahub.training.networks`)."""
    lokr_factor: int = -1
    """LoKr's Kronecker factor (LyCORIS ``factor``, PEFT ``decompose_factor``); -1: the most balanced split."""
    train_text_encoder: bool = False
    """A LoRA on the CLIP text encoders too (SDXL: both; FLUX: CLIP-L only, T5 stays frozen), as kohya does."""
    text_encoder_lr: float | None = None
    """The text encoders' learning rate; None: ``lr``."""
    ema_decay: float | None = None
    """An exponential moving average of the adapter weights, saved instead of them (None: no EMA)."""
    processes: int = 1
    """Data-parallel processes (Accelerate); each takes ``batch`` examples per micro-step."""
    # data: buckets, captions, repeats, loss weighting
    buckets: bool = False
    """Aspect-ratio buckets (kohya's rules, :mod:`lorahub.training.buckets`); off: every image is a square crop."""
    bucket_step: int = 64
    min_bucket: int | None = None
    """The shortest bucket side; None: half the resolution (kohya's 256 at 512 px)."""
    max_bucket: int | None = None
    """The longest bucket side; None: twice the resolution (kohya's 1024 at 512 px)."""
    bucket_no_upscale: bool = False
    random_crop: bool = False
    shuffle_captions: bool = False
    keep_tokens: int = 0
    caption_dropout: float = 0.0
    noise_offset: float = 0.0
    min_snr_gamma: float | None = None
    # samples and memory
    sample_prompts: tuple[str, ...] = ()
    """Prompt lines sampled with the adapter during training, in kohya's prompt-file syntax (``a cat --n blurry
    --s 20 --l 7.5 --d 42 --w 512 --h 512``; :mod:`lorahub.training.samples`); every ``sample_every`` steps and
    at the end."""
    sample_every: int = 0
    """Sample the prompts every N optimizer steps (0: only at the end, when there are prompts)."""
    quantization: Quantization | None = None
    """Load the FLUX transformer's frozen weights quantised (``int8``: torchao, any device; ``nf4``: bitsandbytes on
    a CUDA GPU); the LoRA parameters stay in fp32 (:mod:`lorahub.training.quantised`)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form settings recorded as given (strings and integers only)."""

    @property
    def bucket_sides(self) -> tuple[int, int]:
        """(shortest, longest) bucket side: the given ones, else half and twice the resolution rounded to the
        bucket step (256 and 1024 at 512 px with step 64, kohya's defaults)."""
        step = self.bucket_step
        low = self.min_bucket if self.min_bucket is not None else max(step, self.resolution // 2 // step * step)
        high = self.max_bucket if self.max_bucket is not None else self.resolution * 2 // step * step
        return low, high

    @property
    def network_alpha(self) -> float:
        return float(self.rank) if self.alpha is None else self.alpha

    def check(self) -> TrainConfig:
        """Refuse settings that cannot train, naming the setting; returns self for chaining."""
        positive = {"rank": self.rank, "steps": self.steps, "batch": self.batch, "grad_accum": self.grad_accum}
        positive |= {"resolution": self.resolution, "log_every": self.log_every}
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise _bad(name, value, "a positive integer")
        if self.resolution % 8:
            raise _bad("resolution", self.resolution, "a multiple of 8 (the VAE downsamples by 8)")
        for name, value in {"warmup": self.warmup, "save_every": self.save_every}.items():
            if not isinstance(value, int) or value < 0:
                raise _bad(name, value, "an integer ≥ 0")
        if not self.lr > 0:
            raise _bad("lr", self.lr, "a positive number")
        if self.alpha is not None and not self.alpha > 0:
            raise _bad("alpha", self.alpha, "a positive number")
        if self.scheduler not in SCHEDULERS:
            raise _bad("scheduler", self.scheduler, f"one of {', '.join(SCHEDULERS)}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise _bad("mixed_precision", self.mixed_precision, f"one of {', '.join(MIXED_PRECISION)}")
        if not self.prior_weight >= 0:
            raise _bad("prior_weight", self.prior_weight, "a number ≥ 0")
        if any(not t or not isinstance(t, str) for t in self.targets):
            raise _bad("targets", self.targets, "module-name suffixes such as to_q,to_k")
        self._check_network()
        check_data_settings(self)
        self._check_samples_and_memory()
        return self

    def _check_network(self) -> None:
        if self.network not in NETWORKS:
            raise _bad("network", self.network, f"one of {', '.join(NETWORKS)}")
        if not isinstance(self.lokr_factor, int) or (self.lokr_factor != -1 and self.lokr_factor < 1):
            raise _bad("lokr_factor", self.lokr_factor, "-1 (balanced) or a positive integer")
        if self.text_encoder_lr is not None and not self.text_encoder_lr > 0:
            raise _bad("text_encoder_lr", self.text_encoder_lr, "a positive number")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise _bad("ema_decay", self.ema_decay, "a number between 0 and 1, e.g. 0.999")
        if not isinstance(self.processes, int) or self.processes < 1:
            raise _bad("processes", self.processes, "a positive integer")

    @property
    def effective_batch(self) -> int:
        """Examples per optimizer step, all processes together."""
        return self.batch * self.grad_accum * self.processes

    def _check_samples_and_memory(self) -> None:
        from lorahub.training.samples import parse_prompts

        if not isinstance(self.sample_every, int) or self.sample_every < 0:
            raise _bad("sample_every", self.sample_every, "an integer ≥ 0")
        if self.sample_every and not self.sample_prompts:
            raise errors.TrainingError(
                f"sample_every = {self.sample_every} but there are no sample prompts",
                hint="Give the prompts too: --sample-prompts FILE (one prompt per line).",
            )
        parse_prompts(self.sample_prompts, resolution=self.resolution)
        if self.quantization is not None and self.quantization not in QUANTIZATIONS:
            raise _bad("quantization", self.quantization, f"one of {', '.join(QUANTIZATIONS)}")

    def card_dict(self) -> dict[str, Any]:
        """Every setting, JSON without floats (the card's rule): numbers that are not integers become strings."""
        out = {f.name: _card_value(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "extra"}
        out["alpha"] = _card_value(self.network_alpha)
        out |= {key: _card_value(value) for key, value in sorted(self.extra.items())}
        out |= {"optimizer": "AdamW", "loss": "mse"}
        return out

    @classmethod
    def from_card_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """The inverse of :meth:`card_dict` (a resumed run reads its settings back from the checkpoint)."""
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in data and f.name != "extra":
                kwargs[f.name] = _from_card(f.name, data[f.name])
        return cls(**kwargs)


FLOAT_FIELDS = frozenset({"alpha", "lr", "prior_weight", "weight_decay", "max_grad_norm", "adam_epsilon"}) | frozenset(
    {"text_encoder_lr", "ema_decay", "caption_dropout", "noise_offset", "min_snr_gamma"}
)


def _from_card(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in FLOAT_FIELDS:
        return float(value)
    if name == "adam_betas":
        return tuple(float(v) for v in value)
    if name in ("targets", "sample_prompts"):
        return tuple(value)
    return value


def _card_value(value: Any) -> Any:
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, tuple | list):
        return [_card_value(v) for v in value]
    return value


def check_data_settings(config: TrainConfig) -> None:
    """The data and loss settings (buckets, captions, noise offset, min-SNR), checked like the others."""
    if not isinstance(config.bucket_step, int) or config.bucket_step < 8 or config.bucket_step % 8:
        raise _bad("bucket_step", config.bucket_step, "a positive multiple of 8 (the VAE downsamples by 8)")
    low, high = config.bucket_sides
    for name, value in {"min_bucket": low, "max_bucket": high}.items():
        if config.buckets and (value < config.bucket_step or value % config.bucket_step):
            raise _bad(name, value, f"a multiple of bucket_step ({config.bucket_step})")
    if config.buckets and (low > config.resolution or high < config.resolution):
        raise _bad("min_bucket/max_bucket", (low, high), f"sides around the resolution ({config.resolution})")
    _check_caption_and_loss(config)


def _check_caption_and_loss(config: TrainConfig) -> None:
    if not isinstance(config.keep_tokens, int) or config.keep_tokens < 0:
        raise _bad("keep_tokens", config.keep_tokens, "an integer ≥ 0")
    if not 0.0 <= config.caption_dropout < 1.0:
        raise _bad("caption_dropout", config.caption_dropout, "a probability in [0, 1)")
    if not config.noise_offset >= 0:
        raise _bad("noise_offset", config.noise_offset, "a number ≥ 0 (kohya and diffusers use about 0.05–0.1)")
    if config.min_snr_gamma is not None and not config.min_snr_gamma > 0:
        raise _bad("min_snr_gamma", config.min_snr_gamma, "a positive number (5 in the Min-SNR paper), or unset")
    if config.random_crop and config.cache_latents:
        raise _bad("random_crop", True, "off with cache_latents (a cached latent is of one crop), as in kohya")


def _bad(name: str, value: Any, expected: str) -> errors.LorahubError:
    return errors.TrainingError(f"training setting {name} = {value!r} is not valid: expected {expected}")


def resumed_config(saved: TrainConfig, requested: TrainConfig) -> TrainConfig:
    """The settings of a resumed run: the checkpoint's, except what :data:`RESUMABLE_OVERRIDES` allows and the
    request sets (a value other than the default; without ``steps`` a run goes to its own total). A request
    that sets anything else to a value other than both the default and the saved one is refused, not ignored."""
    default = TrainConfig()
    conflicts = [
        f.name
        for f in dataclasses.fields(TrainConfig)
        if f.name not in RESUMABLE_OVERRIDES
        and getattr(requested, f.name) != getattr(default, f.name)
        and getattr(requested, f.name) != getattr(saved, f.name)
    ]
    if conflicts:
        raise errors.TrainingError(
            f"a resumed run keeps its settings; these differ from the checkpoint's: {', '.join(conflicts)}",
            hint="Leave them out (only --steps, --save-every and --log-every may change on resume), "
            "or start a new run.",
        )
    changes = {
        name: getattr(requested, name)
        for name in RESUMABLE_OVERRIDES
        if getattr(requested, name) != getattr(default, name)
    }
    return dataclasses.replace(saved, **changes)

"""The training loop: diffusers models, a peft LoRA on the denoiser, AdamW, and the objective the base requires.

It follows diffusers' ``train_text_to_image_lora.py`` (frozen VAE, text encoders and denoiser; LoRA parameters
upcast to fp32; ``F.mse_loss`` on fp32; gradient clipping; AdamW over the LoRA parameters only), with what that
script leaves out and this one needs: cached text embeddings (the text encoders are frozen, so each caption is
encoded once and the encoders are freed), optionally cached latents (the VAE's distribution per image, sampled
each step, then the VAE is freed), prior preservation, and an exactly resumable state (every random generator,
the data order, optimizer and scheduler).

Objectives: ``epsilon`` and ``v_prediction`` from the scheduler config (SD 1/2, SDXL) and rectified flow for FLUX
(``target = noise - latents``, timesteps uniform, as diffusers' ``train_dreambooth_lora_flux.py`` with weighting
"none").

Randomness: a CPU generator draws the data order, a generator on the training device draws noise, timesteps and
latent samples; both are seeded from ``seed`` and saved in checkpoints, so a run resumed from step k takes the same
steps as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from lorahub import errors
from lorahub.training import buckets, distributed, networks, weighting
from lorahub.training.base import Base
from lorahub.training.captions import CaptionVariation
from lorahub.training.config import DEFAULT_TARGETS, FLUX_EXTRA_TARGETS, TrainConfig
from lorahub.training.data import Example
from lorahub.training.networks import ADAPTER_NAME
from lorahub.training.quantised import placed_on_load, quantised_denoiser
from lorahub.training.samples import Sampler

__all__ = ["ADAPTER_NAME", "Precision", "RunState", "Step", "Trainer", "iterate_steps"]
TEXT_BATCH = 16
FLUX_MAX_SEQUENCE_LENGTH = 512
FLUX_GUIDANCE = 3.5


def _module(name: str) -> Any:
    """torch, diffusers, peft, imported when a run starts and typed loosely (they are partly annotated)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise errors.MissingExtraError("training", "train") from None


@dataclass(frozen=True)
class Step:
    """What the progress callback gets after each optimizer step."""

    step: int
    total: int
    loss: float
    lr: float
    seconds: float
    """How long this step took."""
    elapsed_s: float
    """Since this ``train`` call started."""


@dataclass
class Precision:
    """The precision actually used, and why it differs from the request (CPU has no useful fp16/bf16 training)."""

    requested: str
    used: str
    note: str | None = None


@dataclass
class _Cached:
    """One example ready for the denoiser: text conditioning and either pixels or the latent distribution."""

    text: dict[str, Any]
    caption: str = ""
    """Encoded each step instead of ``text`` when the text encoders train or captions vary."""
    pixels: Any = None
    latent_mean: Any = None
    latent_std: Any = None
    bucket: buckets.Size = (0, 0)
    repeats: int = 1


@dataclass(frozen=True)
class _Drawn:
    """One example as a step trains on it: its caption variant (None: the caption as written) and its pixels
    cropped for this step (None when latents are cached)."""

    item: _Cached
    caption: str | None = None
    pixels: Any = None


@dataclass
class RunState:
    """Progress that a checkpoint must carry beyond the weights: the step reached and the loss history."""

    step: int = 0
    losses: list[float] = field(default_factory=list)


class Trainer:
    """One run on one base. Build it, call :meth:`train` (possibly several times, each up to a step), read
    :meth:`lora_state` for the weights; :mod:`lorahub.training.state` saves and restores the whole run.
    ``held_out`` examples are prepared for :meth:`evaluate` (a validation loss), never trained on."""

    def __init__(
        self,
        base: Base,
        config: TrainConfig,
        examples: Sequence[Example],
        *,
        prior: Sequence[Example] = (),
        held_out: Sequence[Example] = (),
        device: str | None = None,
    ) -> None:
        self.torch = _module("torch")
        self.base = base
        self.config = config
        self.world = distributed.join(device)
        default = self.world.device or ("cuda" if self.torch.cuda.is_available() else "cpu")
        self.device = self.torch.device(device or default)
        self.text_encoders = networks.trained_text_encoders(base.family, config)
        self.precision = _precision(self.torch, self.device, config.mixed_precision)
        self.notes: list[str] = [self.precision.note] if self.precision.note else []
        self.run = RunState()
        self.bucketing = buckets.Bucketing.of(config)
        self.captions = CaptionVariation.of(config)
        self._load()
        self._add_lora()
        self.examples = self._prepare(examples, cache_latents=config.cache_latents)
        self.prior = self._prepare(prior, cache_latents=config.cache_latents) if prior else []
        self.held_out = self._prepare(held_out, cache_latents=True) if held_out else []
        self.empty_text = self._encode_captions([""])[0] if self.captions.active else None
        self.sampler = self._sampler(self.examples)
        self.prior_sampler = self._sampler(self.prior)
        self.image_sampler = Sampler(self, config.sample_prompts) if config.sample_prompts else None
        self._free_encoders()
        self._optimizer_and_schedule()
        self.data_gen = self.torch.Generator().manual_seed(config.seed)
        self.noise_gen = self.torch.Generator(device=self.device).manual_seed(config.seed + 1)
        self.order: list[int] = []
        self.prior_order: list[int] = []

    # --- set-up -------------------------------------------------------------------------------------------------

    @property
    def weight_dtype(self) -> Any:
        return {"bf16": self.torch.bfloat16, "fp16": self.torch.float16}.get(self.precision.used, self.torch.float32)

    def _load(self) -> None:
        diffusers = _module("diffusers")
        try:
            extra = {"safety_checker": None} if self.base.pipeline_class == "StableDiffusionPipeline" else {}
            extra |= quantised_denoiser(diffusers, self.base, self.config.quantization, self.weight_dtype, self.device)
            pipe = diffusers.DiffusionPipeline.from_pretrained(
                str(self.base.path), dtype=self.weight_dtype, **extra
            )  # the safety checker is an image classifier for inference: training never runs it
        except (OSError, ValueError, RuntimeError) as exc:
            raise errors.TrainingError(f"cannot load the base pipeline {self.base.path}: {exc}") from None
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe
        self.denoiser = getattr(pipe, self.base.denoiser)
        self.vae = pipe.vae
        self.vae_config = pipe.vae.config
        if self.base.family == "sdxl" and self.precision.used == "fp16":
            self.vae.to(dtype=self.torch.float32)  # the SDXL VAE overflows in fp16 (diffusers' scripts upcast it)
        if self.base.prediction_type == "flow":
            self.scheduler = diffusers.FlowMatchEulerDiscreteScheduler.from_pretrained(
                str(self.base.path), subfolder="scheduler"
            )
        else:
            self.scheduler = diffusers.DDPMScheduler.from_pretrained(str(self.base.path), subfolder="scheduler")
        for component in pipe.components.values():
            if isinstance(component, self.torch.nn.Module):
                component.requires_grad_(False)
                if not placed_on_load(component):
                    component.to(self.device)
                component.eval()

    def _add_lora(self) -> None:
        config = self.config
        self.trained = {networks.DENOISER: self.denoiser} | {n: getattr(self.pipe, n) for n in self.text_encoders}
        with self.torch.random.fork_rng(devices=[]):
            self.torch.manual_seed(config.seed)  # peft's initialisations draw from the global RNG
            networks.add_adapter(self.denoiser, networks.tuner_config(config, self.targets), config.network)
            for name in self.text_encoders:
                networks.add_adapter(getattr(self.pipe, name), networks.text_encoder_config(config), "lora", name)
        for model in self.trained.values():
            _module("diffusers.training_utils").cast_training_params(model, dtype=self.torch.float32)
        self.params = [p for p in self.denoiser.parameters() if p.requires_grad]
        self.text_params = [p for n in self.text_encoders for p in self.trained[n].parameters() if p.requires_grad]
        self.all_params = self.params + self.text_params
        self.ema = None
        if config.ema_decay is not None:
            from lorahub.training.ema import AdapterEMA

            self.ema = AdapterEMA(self.all_params, config.ema_decay)
        if config.gradient_checkpointing:
            self.denoiser.enable_gradient_checkpointing()
        self.denoiser.train()

    @property
    def targets(self) -> tuple[str, ...]:
        if self.config.targets:
            return self.config.targets
        return DEFAULT_TARGETS + (FLUX_EXTRA_TARGETS if self.base.family == "flux1" else ())

    def _optimizer_and_schedule(self) -> None:
        torch = self.torch
        optimizer_class, self.optimizer_name = torch.optim.AdamW, "torch.optim.AdamW"
        if self.device.type == "cuda":
            with contextlib.suppress(ImportError, OSError, RuntimeError):  # a broken bitsandbytes: plain AdamW
                optimizer_class = importlib.import_module("bitsandbytes").optim.AdamW8bit
                self.optimizer_name = "bitsandbytes.optim.AdamW8bit"
        groups: Any = self.params
        if self.text_params:
            text_lr = self.config.text_encoder_lr or self.config.lr
            groups = [{"params": self.params}, {"params": self.text_params, "lr": text_lr}]
        self.optimizer = optimizer_class(
            groups,
            lr=self.config.lr,
            betas=self.config.adam_betas,
            weight_decay=self.config.weight_decay,
            eps=self.config.adam_epsilon,
        )
        get_scheduler = _module("diffusers.optimization").get_scheduler
        name = "constant_with_warmup" if self.config.scheduler == "constant" else "cosine"
        self.lr_schedule = get_scheduler(
            name, self.optimizer, num_warmup_steps=self.config.warmup, num_training_steps=self.config.steps
        )
        self.scaler = torch.amp.GradScaler("cuda") if self.precision.used == "fp16" else None

    # --- data ---------------------------------------------------------------------------------------------------

    def _prepare(self, examples: Sequence[Example], *, cache_latents: bool) -> list[_Cached]:
        """Encode every caption once (frozen text encoders); load pixels, or the latent distribution when
        latents are cached."""
        with self.torch.no_grad():
            captions = [e.caption for e in examples]
            texts = self._encode_captions(captions) if not self.text_encoders else [{} for _ in examples]
            cached = [
                _Cached(text=t, caption=e.caption, repeats=e.repeats) for t, e in zip(texts, examples, strict=True)
            ]
            keep_whole = self.config.random_crop and not cache_latents
            for item, example in zip(cached, examples, strict=True):
                pixels, placement = buckets.load(self.torch, example.path, self.bucketing, keep_whole=keep_whole)
                item.bucket = placement.bucket
                if cache_latents:
                    item.latent_mean, item.latent_std = self._latent_distribution(pixels[None])
                else:
                    item.pixels = pixels
        return cached

    def _sampler(self, items: Sequence[_Cached]) -> buckets.Sampler:
        return buckets.sampler(
            [i.bucket for i in items],
            [i.repeats for i in items],
            self.config.batch * self.world.size,
            grouped=self.config.buckets,
        )

    def _encode_captions(self, captions: list[str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for start in range(0, len(captions), TEXT_BATCH):
            chunk = captions[start : start + TEXT_BATCH]
            encoded = self._encode(chunk)
            out += [{key: value[i].detach() for key, value in encoded.items()} for i in range(len(chunk))]
        return out

    def _encode(self, prompts: list[str]) -> dict[str, Any]:
        pipe, family = self.pipe, self.base.family
        if family == "flux1":
            embeds, pooled, text_ids = pipe.encode_prompt(
                prompts, prompt_2=None, device=self.device, max_sequence_length=self.flux_sequence_length
            )
            self.flux_text_ids = text_ids
            return {"embeds": embeds, "pooled": pooled}
        if family == "sdxl":
            embeds, _, pooled, _ = pipe.encode_prompt(
                prompts, device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=False
            )
            return {"embeds": embeds, "pooled": pooled}
        embeds, _ = pipe.encode_prompt(prompts, self.device, 1, False)
        return {"embeds": embeds}

    @property
    def flux_sequence_length(self) -> int:
        limit = getattr(self.pipe.tokenizer_2, "model_max_length", FLUX_MAX_SEQUENCE_LENGTH)
        return int(min(FLUX_MAX_SEQUENCE_LENGTH, limit if limit and limit < 10**6 else FLUX_MAX_SEQUENCE_LENGTH))

    def _latent_distribution(self, pixels: Any) -> tuple[Any, Any]:
        vae = self.vae
        dist = vae.encode(_to_unit(pixels.to(self.device, dtype=vae.dtype))).latent_dist
        return dist.mean[0].detach(), dist.std[0].detach()

    def _free_encoders(self) -> None:
        """The text encoders (and the VAE, when latents are cached and nothing is sampled) are not needed any
        more: free their memory. Text encoders that train, or encode varied captions each step, stay (FLUX's T5
        too)."""
        for name in ("text_encoder", "text_encoder_2"):
            keep = self.text_encoders or self.captions.encodes_each_step
            if getattr(self.pipe, name, None) is not None and not keep:
                setattr(self.pipe, name, None)
        if self.config.cache_latents and self.image_sampler is None:
            self.vae = None
            self.pipe.vae = None
        if self.device.type == "cuda":
            self.torch.cuda.empty_cache()

    def _next_indices(self, order: list[int], sampler: buckets.Sampler, count: int) -> list[int]:
        """``count`` indices from a shuffled order, reshuffled (data generator) whenever it runs out."""
        picked = []
        for _ in range(count):
            if not order:
                order.extend(sampler.epoch(self.torch, self.data_gen))
            picked.append(order.pop(0))
        return picked

    @property
    def example_buckets(self) -> list[buckets.Size]:
        """The bucket of each training example (one square without buckets), for the card."""
        return [item.bucket for item in self.examples]

    # --- one step -----------------------------------------------------------------------------------------------

    def _my_batch(self, pool: Sequence[_Cached], order: list[int], sampler: buckets.Sampler) -> list[_Drawn]:
        """This process's slice of the next global batch. The data generator draws every example's order, caption
        variant and crop for the whole global batch, so all processes stay in step (and one process is a run of
        the same global batch)."""
        batch, rank = self.config.batch, self.world.rank
        everyone = [pool[i] for i in self._next_indices(order, sampler, batch * self.world.size)]
        drawn = [self._draw(item) for item in everyone]
        return drawn[rank * batch : (rank + 1) * batch]

    def _draw(self, item: _Cached) -> _Drawn:
        """The caption variant (:mod:`lorahub.training.captions`), then the crop (at random with ``random_crop``)."""
        caption = self.captions.vary(item.caption, self.torch, self.data_gen) if self.captions.active else None
        if item.pixels is None or not self.config.random_crop:
            return _Drawn(item, caption, item.pixels)
        return _Drawn(item, caption, buckets.crop(self.torch, item.pixels, item.bucket, self.data_gen))

    def _latents(self, batch: Sequence[_Drawn]) -> Any:
        torch = self.torch
        if self.config.cache_latents:
            mean = torch.stack([d.item.latent_mean for d in batch])
            std = torch.stack([d.item.latent_std for d in batch])
            sample = mean + std * self._randn(mean.shape, self.noise_gen, std.dtype)
        else:
            crops = [d.pixels for d in batch]
            pixels = torch.stack(crops).to(self.device, non_blocking=True).to(self.vae.dtype)
            with torch.no_grad():
                dist = self.vae.encode(_to_unit(pixels)).latent_dist
                sample = dist.mean + dist.std * self._randn(dist.mean.shape, self.noise_gen, dist.mean.dtype)
        config = self.vae_config
        shift = getattr(config, "shift_factor", None) or 0.0
        return ((sample - shift) * config.scaling_factor).to(self.weight_dtype)

    def _text(self, batch: Sequence[_Drawn]) -> dict[str, Any]:
        """The batch's text conditioning: encoded now (with gradients) when the text encoders train; else cached,
        with varied captions encoded now."""
        if self.text_encoders:
            captions = [d.item.caption if d.caption is None else d.caption for d in batch]
            with self.torch.autocast(self.device.type, dtype=self.weight_dtype, enabled=self.precision.used != "no"):
                return self._encode(captions)
        texts = [d.item.text for d in batch]
        fresh = [d.caption for d in batch if d.caption]
        encoded = iter(self._encode_captions(fresh) if fresh else [])
        for index, drawn in enumerate(batch):
            if drawn.caption is not None:
                texts[index] = next(encoded) if drawn.caption else self.empty_text or texts[index]
        return {key: self.torch.stack([t[key] for t in texts]) for key in texts[0]}

    def loss(self, batch: Sequence[_Drawn]) -> Any:
        """The objective on a batch: latents sampled, then noise and timesteps drawn."""
        return self.objective(self._latents(batch), self._text(batch), self.noise_gen)

    def _randn(self, shape: Sequence[int], gen: Any, dtype: Any) -> Any:
        """Normal noise for this process's part of the global batch: every process draws the whole batch's."""
        full = self.torch.randn(self._global(shape), generator=gen, device=self.device, dtype=dtype)
        return self._mine(full)

    def _randint(self, high: int, batch: int, gen: Any) -> Any:
        return self._mine(self.torch.randint(0, high, self._global((batch,)), generator=gen, device=self.device))

    def _global(self, shape: Sequence[int]) -> tuple[int, ...]:
        return (shape[0] * self.world.size, *shape[1:])

    def _mine(self, full: Any) -> Any:
        size = full.shape[0] // self.world.size
        return full[self.world.rank * size : (self.world.rank + 1) * size]

    def objective(self, latents: Any, text: dict[str, Any], gen: Any, timesteps: Any = None) -> Any:
        """Noise, timesteps (drawn from ``gen``, or given), the base's target, and the MSE in fp32."""
        torch = self.torch
        noise = self._randn(latents.shape, gen, latents.dtype)
        if self.config.noise_offset > 0:
            shift = self._randn(weighting.offset_shape(noise), gen, latents.dtype)
            noise = noise + self.config.noise_offset * shift
        weights = None
        with torch.autocast(self.device.type, dtype=self.weight_dtype, enabled=self.precision.used != "no"):
            if self.base.prediction_type == "flow":
                pred, target = self._flow(latents, noise, text, gen, timesteps)
            else:
                pred, target, timesteps = self._diffusion(latents, noise, text, gen, timesteps)
                if self.config.min_snr_gamma is not None:
                    gamma, objective = self.config.min_snr_gamma, self.base.prediction_type
                    weights = weighting.min_snr_weights(torch, self.scheduler, timesteps, gamma, objective)
        return weighting.weighted_mse(torch, pred, target, weights)

    def _diffusion(self, latents: Any, noise: Any, text: dict[str, Any], gen: Any, timesteps: Any) -> Any:
        torch, scheduler = self.torch, self.scheduler
        batch = latents.shape[0]
        if timesteps is None:
            timesteps = self._randint(scheduler.config.num_train_timesteps, batch, gen)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        kwargs: dict[str, Any] = {"encoder_hidden_states": text["embeds"]}
        if self.base.family == "sdxl":  # original size, crop corner, target size: the bucket's, as (height, width)
            height, width = (side * self.pipe.vae_scale_factor for side in latents.shape[-2:])
            time_ids = torch.tensor([[height, width, 0, 0, height, width]] * batch, device=self.device)
            kwargs["added_cond_kwargs"] = {"text_embeds": text["pooled"], "time_ids": time_ids.to(latents.dtype)}
        pred = self.denoiser(noisy, timesteps, **kwargs).sample
        prediction = self.base.prediction_type
        if prediction == "epsilon":
            return pred, noise, timesteps
        if prediction == "v_prediction":
            return pred, scheduler.get_velocity(latents, noise, timesteps), timesteps
        if prediction == "sample":
            return pred, latents, timesteps
        raise errors.TrainingError(f"unknown prediction_type {prediction!r} in the base's scheduler config")

    def _flow(self, latents: Any, noise: Any, text: dict[str, Any], gen: Any, timesteps: Any) -> Any:
        torch, scheduler = self.torch, self.scheduler
        pipeline = _module("diffusers").FluxPipeline
        batch, channels, height, width = latents.shape
        index = self._randint(scheduler.config.num_train_timesteps, batch, gen) if timesteps is None else timesteps
        sigmas = scheduler.sigmas[index.cpu()].to(self.device, dtype=latents.dtype)
        noisy = (1.0 - sigmas[:, None, None, None]) * latents + sigmas[:, None, None, None] * noise
        packed = pipeline._pack_latents(noisy, batch, channels, height, width)
        image_ids = pipeline._prepare_latent_image_ids(batch, height // 2, width // 2, self.device, latents.dtype)
        guidance = None
        if self.denoiser.config.guidance_embeds:
            guidance = torch.full((batch,), FLUX_GUIDANCE, device=self.device, dtype=latents.dtype)
        pred = self.denoiser(
            hidden_states=packed,
            timestep=scheduler.timesteps[index.cpu()].to(self.device, dtype=latents.dtype) / 1000.0,
            guidance=guidance,
            pooled_projections=text["pooled"],
            encoder_hidden_states=text["embeds"],
            txt_ids=self.flux_text_ids,
            img_ids=image_ids,
            return_dict=False,
        )[0]
        scale = self.pipe.vae_scale_factor
        pred = pipeline._unpack_latents(pred, height * scale, width * scale, scale)
        return pred, noise - latents

    def _micro_loss(self) -> Any:
        config = self.config
        items = self._my_batch(self.examples, self.order, self.sampler)
        loss = self.loss(items)
        if self.prior:
            prior_items = self._my_batch(self.prior, self.prior_order, self.prior_sampler)
            loss = loss + config.prior_weight * self.loss(prior_items)
        return loss

    def _optimizer_step(self) -> float:
        config, torch = self.config, self.torch
        total = 0.0
        for _ in range(config.grad_accum):
            loss = self._micro_loss() / config.grad_accum
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
            else:
                loss.backward()
            total += float(loss.detach())
        distributed.average_gradients(torch, self.all_params, self.world)  # before unscaling: every process skips
        if self.scaler is not None:  # an fp16 overflow together
            self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.all_params, config.max_grad_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.lr_schedule.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update()
        return distributed.mean(torch, total, self.world)

    # --- public -------------------------------------------------------------------------------------------------

    def train(self, until: int, on_step: Callable[[Step], None] | None = None) -> None:
        """Optimizer steps from the current one up to ``until`` (at most ``config.steps``)."""
        until = min(until, self.config.steps)
        start = time.perf_counter()
        while self.run.step < until:
            began = time.perf_counter()
            loss = self._optimizer_step()
            if not math.isfinite(loss):
                raise errors.TrainingError(
                    f"the loss became {loss} at step {self.run.step + 1}",
                    hint="Lower --lr, or use --mixed-precision bf16/no instead of fp16.",
                )
            self.run.step += 1
            self.run.losses.append(loss)
            if on_step is not None:
                lr = float(self.lr_schedule.get_last_lr()[0])
                now = time.perf_counter()
                on_step(Step(self.run.step, self.config.steps, loss, lr, now - began, now - start))

    def evaluate(self, *, seed: int = 1234, repeats: int = 4) -> float:
        """Mean loss on the held-out examples with latents (the VAE's mean), noise and timesteps fixed by
        ``seed``: the same call before and after training measures what training changed, free of sampling
        noise."""
        torch = self.torch
        if not self.held_out:
            raise errors.TrainingError("evaluate needs held-out examples (Trainer(..., held_out=[...]))")
        config = self.vae_config
        shift = getattr(config, "shift_factor", None) or 0.0
        latents = torch.stack([i.latent_mean for i in self.held_out])
        latents = ((latents - shift) * config.scaling_factor).to(self.weight_dtype)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        high = self.scheduler.config.num_train_timesteps
        count = len(self.held_out)
        losses = []
        with torch.no_grad():
            text = self._text([_Drawn(item) for item in self.held_out])
            for repeat in range(repeats):
                spread = [(high * (2 * k + 1) + repeat * high // repeats) // (2 * count) % high for k in range(count)]
                steps = torch.tensor(spread, device=self.device)
                losses.append(float(self.objective(latents, text, generator, steps)))
        return sum(losses) / len(losses)

    def lora_state(self) -> dict[str, Any]:
        """``{module path.tensor: tensor}`` of the denoiser's adapter as trained, fp32 on CPU (peft's names with
        the adapter removed)."""
        return networks.adapter_state(self.denoiser)

    def adapter_states(self) -> dict[str, dict[str, Any]]:
        """What a checkpoint writes: each trained model's adapter (``denoiser``, ``text_encoder``…), the moving
        average of the weights when ``ema_decay`` is set."""
        with self.ema.applied() if self.ema is not None else contextlib.nullcontext():
            return {name: networks.adapter_state(model) for name, model in self.trained.items()}

    def module_scales(self) -> dict[str, dict[str, tuple[float, int]]]:
        return {name: networks.module_scales(model) for name, model in self.trained.items()}


# --- helpers ---------------------------------------------------------------------------------------------------


def _precision(torch: Any, device: Any, requested: str) -> Precision:
    if requested == "no":
        return Precision(requested, "no")
    if device.type != "cuda":
        note = f"mixed precision {requested} was requested; on CPU lorahub trains in fp32 (no fast {requested} path)"
        return Precision(requested, "no", note)
    if requested == "bf16" and not torch.cuda.is_bf16_supported():
        return Precision(requested, "fp16", "this GPU has no bf16: trained with fp16 mixed precision instead")
    return Precision(requested, requested)


def _to_unit(pixels: Any) -> Any:
    """uint8 [0, 255] → [-1, 1] in the pixels' float dtype."""
    return pixels / 127.5 - 1.0


def iterate_steps(total: int, every: int) -> Iterator[int]:
    """The step numbers at which a run stops to checkpoint: every ``every`` steps, and the last."""
    if every > 0:
        yield from range(every, total, every)
    yield total

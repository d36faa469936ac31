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
from lorahub.training.base import Base
from lorahub.training.config import DEFAULT_TARGETS, FLUX_EXTRA_TARGETS, TrainConfig
from lorahub.training.data import Example
from lorahub.training.quantised import quantised_denoiser
from lorahub.training.samples import Sampler

ADAPTER_NAME = "lorahub"
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
    pixels: Any = None
    latent_mean: Any = None
    latent_std: Any = None


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
        self.device = self.torch.device(device or ("cuda" if self.torch.cuda.is_available() else "cpu"))
        self.precision = _precision(self.torch, self.device, config.mixed_precision)
        self.notes: list[str] = [self.precision.note] if self.precision.note else []
        self.run = RunState()
        self._load()
        self._add_lora()
        self.examples = self._prepare(examples, cache_latents=config.cache_latents)
        self.prior = self._prepare(prior, cache_latents=config.cache_latents) if prior else []
        self.held_out = self._prepare(held_out, cache_latents=True) if held_out else []
        self.sampler = Sampler(self, config.sample_prompts) if config.sample_prompts else None
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
                if not getattr(component, "is_quantized", False):  # bitsandbytes placed it on the GPU already
                    component.to(self.device)
                component.eval()

    def _add_lora(self) -> None:
        peft = _module("peft")
        targets = self.targets
        lora = peft.LoraConfig(
            r=self.config.rank,
            lora_alpha=self.config.network_alpha,
            init_lora_weights="gaussian",
            target_modules=list(targets),
        )
        try:
            with self.torch.random.fork_rng(devices=[]):
                self.torch.manual_seed(self.config.seed)  # peft's gaussian init of A draws from the global RNG
                self.denoiser.add_adapter(lora, adapter_name=ADAPTER_NAME)
        except ValueError as exc:
            raise errors.TrainingError(
                f"cannot put a LoRA on {', '.join(targets)}: {exc}",
                hint="--targets takes module-name suffixes of the denoiser, e.g. to_q,to_k,to_v,to_out.0",
            ) from None
        _module("diffusers.training_utils").cast_training_params(self.denoiser, dtype=self.torch.float32)
        self.params = [p for p in self.denoiser.parameters() if p.requires_grad]
        if self.config.gradient_checkpointing:
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
        self.optimizer = optimizer_class(
            self.params,
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
            texts = self._encode_captions([e.caption for e in examples])
            cached = [_Cached(text=t) for t in texts]
            for item, example in zip(cached, examples, strict=True):
                pixels = _load_pixels(self.torch, example, self.config.resolution)
                if cache_latents:
                    item.latent_mean, item.latent_std = self._latent_distribution(pixels[None])
                else:
                    item.pixels = pixels
        return cached

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
        more: free their memory."""
        for name in ("text_encoder", "text_encoder_2"):
            if getattr(self.pipe, name, None) is not None:
                setattr(self.pipe, name, None)
        if self.config.cache_latents and self.sampler is None:
            self.vae = None
            self.pipe.vae = None
        if self.device.type == "cuda":
            self.torch.cuda.empty_cache()

    def _next_indices(self, order: list[int], size: int, count: int) -> list[int]:
        """``count`` indices from a shuffled order, reshuffled (data generator) whenever it runs out."""
        picked = []
        for _ in range(count):
            if not order:
                order.extend(self.torch.randperm(size, generator=self.data_gen).tolist())
            picked.append(order.pop(0))
        return picked

    # --- one step -----------------------------------------------------------------------------------------------

    def _latents(self, items: Sequence[_Cached]) -> Any:
        torch = self.torch
        if self.config.cache_latents:
            mean = torch.stack([i.latent_mean for i in items])
            std = torch.stack([i.latent_std for i in items])
            sample = mean + std * torch.randn(mean.shape, generator=self.noise_gen, device=self.device, dtype=std.dtype)
        else:
            pixels = torch.stack([i.pixels for i in items]).to(self.device, non_blocking=True).to(self.vae.dtype)
            with torch.no_grad():
                dist = self.vae.encode(_to_unit(pixels)).latent_dist
                sample = dist.mean + dist.std * torch.randn(
                    dist.mean.shape, generator=self.noise_gen, device=self.device, dtype=dist.mean.dtype
                )
        config = self.vae_config
        shift = getattr(config, "shift_factor", None) or 0.0
        return ((sample - shift) * config.scaling_factor).to(self.weight_dtype)

    def loss(self, items: Sequence[_Cached]) -> Any:
        """The objective on a batch of training items: latents sampled, then noise and timesteps drawn."""
        text = {key: self.torch.stack([i.text[key] for i in items]) for key in items[0].text}
        return self.objective(self._latents(items), text, self.noise_gen)

    def objective(self, latents: Any, text: dict[str, Any], gen: Any, timesteps: Any = None) -> Any:
        """Noise, timesteps (drawn from ``gen``, or given), the base's target, and the MSE in fp32."""
        torch = self.torch
        noise = torch.randn(latents.shape, generator=gen, device=self.device, dtype=latents.dtype)
        with torch.autocast(self.device.type, dtype=self.weight_dtype, enabled=self.precision.used != "no"):
            if self.base.prediction_type == "flow":
                pred, target = self._flow(latents, noise, text, gen, timesteps)
            else:
                pred, target = self._diffusion(latents, noise, text, gen, timesteps)
        return torch.nn.functional.mse_loss(pred.float(), target.float())

    def _diffusion(self, latents: Any, noise: Any, text: dict[str, Any], gen: Any, timesteps: Any) -> Any:
        torch, scheduler = self.torch, self.scheduler
        batch = latents.shape[0]
        if timesteps is None:
            high = scheduler.config.num_train_timesteps
            timesteps = torch.randint(0, high, (batch,), generator=gen, device=self.device)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        kwargs: dict[str, Any] = {"encoder_hidden_states": text["embeds"]}
        if self.base.family == "sdxl":
            size = self.config.resolution
            time_ids = torch.tensor([[size, size, 0, 0, size, size]] * batch, device=self.device)
            kwargs["added_cond_kwargs"] = {"text_embeds": text["pooled"], "time_ids": time_ids.to(latents.dtype)}
        pred = self.denoiser(noisy, timesteps, **kwargs).sample
        prediction = self.base.prediction_type
        if prediction == "epsilon":
            return pred, noise
        if prediction == "v_prediction":
            return pred, scheduler.get_velocity(latents, noise, timesteps)
        if prediction == "sample":
            return pred, latents
        raise errors.TrainingError(f"unknown prediction_type {prediction!r} in the base's scheduler config")

    def _flow(self, latents: Any, noise: Any, text: dict[str, Any], gen: Any, timesteps: Any) -> Any:
        torch, scheduler = self.torch, self.scheduler
        pipeline = _module("diffusers").FluxPipeline
        batch, channels, height, width = latents.shape
        if timesteps is None:
            index = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=gen, device=self.device)
        else:
            index = timesteps
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
        items = [self.examples[i] for i in self._next_indices(self.order, len(self.examples), config.batch)]
        loss = self.loss(items)
        if self.prior:
            prior_items = [self.prior[i] for i in self._next_indices(self.prior_order, len(self.prior), config.batch)]
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
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.params, config.max_grad_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.lr_schedule.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total

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
        text = {key: torch.stack([i.text[key] for i in self.held_out]) for key in self.held_out[0].text}
        generator = torch.Generator(device=self.device).manual_seed(seed)
        high = self.scheduler.config.num_train_timesteps
        count = len(self.held_out)
        losses = []
        with torch.no_grad():
            for repeat in range(repeats):
                spread = [(high * (2 * k + 1) + repeat * high // repeats) // (2 * count) % high for k in range(count)]
                steps = torch.tensor(spread, device=self.device)
                losses.append(float(self.objective(latents, text, generator, steps)))
        return sum(losses) / len(losses)

    def lora_state(self) -> dict[str, Any]:
        """``{module path: (A, B)}`` of the trained LoRA, fp32 on CPU (peft's names with the adapter removed)."""
        peft = _module("peft")
        state = peft.get_peft_model_state_dict(self.denoiser, adapter_name=ADAPTER_NAME)
        return {key: value.detach().float().cpu().contiguous() for key, value in state.items()}


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


def _load_pixels(torch: Any, example: Example, resolution: int) -> Any:
    """The image resized (shorter side) and centre-cropped to a square, as uint8 CHW (a quarter of fp32's memory);
    converted to [-1, 1] floats when encoded."""
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise errors.MissingExtraError("reading training images", "train") from None
    try:
        with Image.open(example.path) as image:
            image.load()
            rgb = ImageOps.exif_transpose(image).convert("RGB")
    except OSError as exc:
        raise errors.TrainingError(f"cannot read training image {example.path}: {exc}") from None
    fitted = ImageOps.fit(rgb, (resolution, resolution), method=Image.Resampling.BICUBIC)
    data = torch.frombuffer(bytearray(fitted.tobytes()), dtype=torch.uint8)
    return data.view(resolution, resolution, 3).permute(2, 0, 1).contiguous()


def _to_unit(pixels: Any) -> Any:
    """uint8 [0, 255] → [-1, 1] in the pixels' float dtype."""
    return pixels / 127.5 - 1.0


def iterate_steps(total: int, every: int) -> Iterator[int]:
    """The step numbers at which a run stops to checkpoint: every ``every`` steps, and the last."""
    if every > 0:
        yield from range(every, total, every)
    yield total

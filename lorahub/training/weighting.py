"""Noise offset and Min-SNR loss weighting, with the formulas kohya sd-scripts and diffusers' scripts use.

Noise offset (Guttenberg, "Diffusion with offset noise"; kohya ``--noise_offset``, diffusers ``--noise_offset``):
``noise += offset · randn(batch, channels, 1, 1)``, a constant shift per image and channel, so the model also
learns to change an image's mean brightness. The target uses the same, offset noise.

Min-SNR-γ (Hang et al. 2023; kohya ``apply_snr_weight``, diffusers ``compute_snr``): with
``SNR(t) = ᾱ_t / (1 − ᾱ_t)``, each sample's MSE is weighted by ``min(SNR, γ) / SNR`` for ε-prediction and
``min(SNR, γ) / (SNR + 1)`` for v-prediction, which turns both into the paper's clipped x₀ weighting.

FLUX trains rectified flow (``target = noise − latents``), whose loss weightings are another family (the SD3
paper's logit-normal, mode or cosmap timestep densities, diffusers' ``weighting_scheme``); Min-SNR-γ is defined
for DDPM objectives, so lorahub refuses it there rather than apply a formula that was not derived for it.
"""

from __future__ import annotations

from typing import Any

from lorahub import errors
from lorahub.training.config import TrainConfig

MIN_SNR_OBJECTIVES = ("epsilon", "v_prediction")


def check_objective(config: TrainConfig, prediction_type: str) -> None:
    """Refuse Min-SNR weighting for an objective it is not defined for (before anything heavy loads)."""
    if config.min_snr_gamma is not None and prediction_type not in MIN_SNR_OBJECTIVES:
        raise errors.TrainingError(
            f"min_snr_gamma is defined for ε- and v-prediction (DDPM) objectives; this base trains "
            f"{prediction_type!r}"
            + (
                " (rectified flow, whose loss weightings are timestep densities, not SNR clipping)"
                if prediction_type == "flow"
                else ""
            ),
            hint="Leave min_snr_gamma unset for this base.",
        )


def offset_shape(noise: Any) -> tuple[int, ...]:
    """The shape of the noise offset's draw: one normal value per image and channel, broadcast over the rest."""
    rest: int = noise.dim() - 2
    return (int(noise.shape[0]), int(noise.shape[1])) + (1,) * rest


def snr(torch: Any, scheduler: Any, timesteps: Any) -> Any:
    """``ᾱ_t / (1 − ᾱ_t)`` at each timestep, in fp32."""
    alphas = scheduler.alphas_cumprod.to(device=timesteps.device, dtype=torch.float32)[timesteps]
    return alphas / (1.0 - alphas)


def min_snr_weights(torch: Any, scheduler: Any, timesteps: Any, gamma: float, prediction_type: str) -> Any:
    """The per-sample weights of Min-SNR-γ for ``prediction_type`` (see the module docstring)."""
    ratio = snr(torch, scheduler, timesteps)
    clipped = torch.clamp(ratio, max=gamma)
    if prediction_type == "epsilon":
        return clipped / ratio
    if prediction_type == "v_prediction":
        return clipped / (ratio + 1.0)
    raise errors.TrainingError(f"min_snr_gamma does not apply to the {prediction_type!r} objective")


def weighted_mse(torch: Any, pred: Any, target: Any, weights: Any | None) -> Any:
    """The MSE in fp32: plain, or each sample's mean weighted (then averaged over the batch)."""
    pred, target = pred.float(), target.float()
    if weights is None:
        return torch.nn.functional.mse_loss(pred, target)
    per_sample = torch.nn.functional.mse_loss(pred, target, reduction="none").mean(dim=list(range(1, pred.dim())))
    return (per_sample * weights).mean()

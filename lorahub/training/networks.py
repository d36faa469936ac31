"""The network a run trains and where: PEFT's tuner for each kind, on the denoiser and (optionally) the text encoders.

LoRA and DoRA are PEFT ``LoraConfig`` (``use_dora`` for DoRA), LoKr and LoHa PEFT's ``LoKrConfig``/``LoHaConfig``:
their tensors carry LyCORIS' own names (``lokr_w1``, ``hada_w1_a``…), so the writer stores them as LyCORIS does.
Text encoders get a LoRA on their attention projections (diffusers' ``train_dreambooth_lora*`` targets), the CLIP
encoders only: FLUX's T5 stays frozen, as kohya's FLUX scripts leave it.
"""

from __future__ import annotations

import importlib
from typing import Any

from lorahub import errors
from lorahub.training.config import TrainConfig

ADAPTER_NAME = "lorahub"
TEXT_ENCODER_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "out_proj")
TRAINED_TEXT_ENCODERS: dict[str, tuple[str, ...]] = {
    "sd1": ("text_encoder",),
    "sd2": ("text_encoder",),
    "sdxl": ("text_encoder", "text_encoder_2"),
    "flux1": ("text_encoder",),
}
"""The CLIP encoders a text-encoder LoRA trains, per family (pipeline attribute names)."""
DENOISER = "denoiser"


def _peft() -> Any:
    try:
        return importlib.import_module("peft")
    except ImportError:
        raise errors.MissingExtraError("training", "train") from None


def tuner_config(config: TrainConfig, targets: tuple[str, ...]) -> Any:
    """The PEFT config of ``config.network`` on ``targets``, with the run's rank and alpha."""
    peft = _peft()
    rank, alpha, modules = config.rank, config.network_alpha, list(targets)
    if config.network == "lokr":
        return peft.LoKrConfig(r=rank, alpha=alpha, target_modules=modules, decompose_factor=config.lokr_factor)
    if config.network == "loha":
        return peft.LoHaConfig(r=rank, alpha=alpha, target_modules=modules)
    return peft.LoraConfig(
        r=rank,
        lora_alpha=alpha,
        init_lora_weights="gaussian",
        target_modules=modules,
        use_dora=config.network == "dora",
    )


def text_encoder_config(config: TrainConfig) -> Any:
    """A plain LoRA on the text encoders' attention projections (kohya trains text encoders with LoRA whatever the
    UNet's network is; ``--network`` applies to the denoiser)."""
    return _peft().LoraConfig(
        r=config.rank,
        lora_alpha=config.network_alpha,
        init_lora_weights="gaussian",
        target_modules=list(TEXT_ENCODER_TARGETS),
    )


def trained_text_encoders(family: str, config: TrainConfig) -> tuple[str, ...]:
    return TRAINED_TEXT_ENCODERS.get(family, ()) if config.train_text_encoder else ()


KIND_NAMES = {"lora": "LoRA", "dora": "DoRA", "lokr": "LoKr", "loha": "LoHa"}


def add_adapter(model: Any, peft_config: Any, network: str, what: str = DENOISER) -> None:
    """Put the adapter on ``model``: diffusers models through their ``add_adapter``; transformers models (the text
    encoders) through PEFT directly, since transformers 5's ``add_adapter`` asks for a newer PEFT than this one."""
    try:
        if what == DENOISER:
            model.add_adapter(peft_config, adapter_name=ADAPTER_NAME)
        else:
            _peft().inject_adapter_in_model(peft_config, model, adapter_name=ADAPTER_NAME)
            model.peft_config = {ADAPTER_NAME: peft_config}  # where PEFT's state-dict functions look for it
    except ValueError as exc:
        targets = ", ".join(sorted(peft_config.target_modules))
        where = "" if what == DENOISER else f" of the {what}"
        raise errors.TrainingError(
            f"cannot put a {KIND_NAMES[network]} on {targets}{where}: {exc}",
            hint="--targets takes module-name suffixes of the denoiser, e.g. to_q,to_k,to_v,to_out.0",
        ) from None


def adapter_state(model: Any) -> dict[str, Any]:
    """``{module path.tensor name: tensor}`` of the trained adapter, fp32 on CPU (PEFT's names without the
    adapter name)."""
    state = _peft().get_peft_model_state_dict(model, adapter_name=ADAPTER_NAME)
    return {key: value.detach().float().cpu().clone() for key, value in state.items()}  # a copy, never a view


def load_state(model: Any, state: dict[str, Any], what: str) -> None:
    """Put a saved :func:`adapter_state` back (a resumed run); refuses one that does not fit."""
    result = _peft().set_peft_model_state_dict(model, state, adapter_name=ADAPTER_NAME)
    if getattr(result, "unexpected_keys", []) or len(state) != len(adapter_state(model)):
        raise errors.TrainingError(f"the saved {what} adapter does not fit this base and these targets")


def module_scales(model: Any) -> dict[str, tuple[float, int]]:
    """``{module path: (alpha, rank)}`` as PEFT applies them (scale = alpha / rank) for every adapted module: the
    writer stores each module's own alpha."""
    tuners = importlib.import_module("peft.tuners.tuners_utils")
    scales: dict[str, tuple[float, int]] = {}
    for name, module in model.named_modules():
        if isinstance(module, tuners.BaseTunerLayer) and ADAPTER_NAME in getattr(module, "scaling", {}):
            alphas = getattr(module, "lora_alpha", None) or module.alpha  # LoRA's name, LyCORIS tuners' name
            scales[name] = (float(alphas[ADAPTER_NAME]), int(module.r[ADAPTER_NAME]))
    return scales

"""The trained adapter as a file A1111, ComfyUI, kohya and diffusers load, with the run's facts in its header.

SD 1.x/2.x and SDXL: kohya layout (``lora_unet_<module path with _>.lora_down/lora_up/alpha``, kohya's own rule),
so the true alpha travels with every module. For SDXL the names are then rewritten to the SGM spelling kohya itself
writes (``input_blocks_4_1_…``) through lorahub's exact converter when the UNet has the real SDXL geometry; a UNet
of another geometry (the tiny test pipelines) keeps the diffusers-path spelling, which diffusers, ComfyUI and
lorahub also read. FLUX: diffusers/PEFT layout (``transformer.<path>.lora_A/B`` with ``lora_adapter_metadata``):
kohya's FLUX layout fuses q/k/v and diffusers' converter for it hard-codes FLUX.1-dev's block counts.

Text-encoder modules go under kohya's ``lora_te_`` (SD 1/2), ``lora_te1_``/``lora_te2_`` (SDXL), or diffusers'
``text_encoder.`` (FLUX's CLIP-L), always with ``text_model.`` in the path (kohya's and lorahub's canonical spelling,
whatever transformers' version). LoKr and LoHa modules keep PEFT's tensor names, which are LyCORIS' (``lokr_w1``,
``hada_w1_a``…), with an ``alpha`` each; a DoRA magnitude is kohya/LyCORIS' ``dora_scale`` ([out, 1…]) in kohya files
and PEFT's ``lora_magnitude_vector`` in diffusers files. Each module's alpha is the one it trained with.

The header carries kohya's ``ss_*`` keys (as sd-scripts' ``train_network.py`` writes them) and the Stability AI
ModelSpec's ``modelspec.*`` keys, ``sshs_model_hash`` and ``modelspec.hash_sha256`` (AutoV3 over the data section, so
metadata edits keep it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lorahub import errors
from lorahub.adapters.encoding import number
from lorahub.files.digests import digest_file
from lorahub.files.safetensors import read_header, write
from lorahub.training.base import Base
from lorahub.training.kohya import ss_settings

SAFETENSORS_DTYPES = {"no": "F32", "bf16": "BF16", "fp16": "F16"}
BASE_MODEL_VERSION = {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0", "flux1": "flux1"}
ARCHITECTURE = {
    "sd1": "stable-diffusion-v1/lora",
    "sd2": "stable-diffusion-v2/lora",
    "sdxl": "stable-diffusion-xl-v1-base/lora",
    "flux1": "flux-1-dev/lora",
}
Entry = tuple[str, tuple[int, ...], bytes]
"""A tensor as ``lorahub.files.safetensors.write`` takes it: dtype, shape, little-endian bytes."""
MODELSPEC_PREDICTION = {"epsilon": "epsilon", "v_prediction": "v", "sample": "sample", "flow": "flow"}


KOHYA_PREFIXES = {
    "denoiser": "lora_unet",
    "text_encoder": "lora_te",
    "text_encoder_2": "lora_te2",
}
SDXL_KOHYA_PREFIXES = KOHYA_PREFIXES | {"text_encoder": "lora_te1"}
DIFFUSERS_PREFIXES = {"denoiser": "transformer", "text_encoder": "text_encoder", "text_encoder_2": "text_encoder_2"}
PEFT_ROLES = ("lora_A.weight", "lora_B.weight", "lora_magnitude_vector")
LYCORIS_ROLES = (
    "lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2",
    "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2",
)  # fmt: skip
KOHYA_ROLES = {"lora_A.weight": "lora_down.weight", "lora_B.weight": "lora_up.weight"}


def write_adapter(
    path: Path,
    states: Mapping[str, Mapping[str, Any]],
    alphas: Mapping[str, Mapping[str, tuple[float, int]]],
    *,
    base: Base,
    dtype: str,
    metadata: Mapping[str, str],
) -> str:
    """Write the trained adapters (``{"denoiser" | "text_encoder" | "text_encoder_2": PEFT state dict}``, with each
    module's alpha and rank) to ``path``; returns the layout written (``kohya``, ``kohya-sgm`` or ``diffusers``)."""
    storage = SAFETENSORS_DTYPES[dtype]
    modules = {
        component: _modules(state, alphas[component], text=component != "denoiser")
        for component, state in states.items()
    }
    if base.family == "flux1":
        _write_hashed(path, *_diffusers_file(modules, storage, metadata))
        return "diffusers"
    prefixes = SDXL_KOHYA_PREFIXES if base.family == "sdxl" else KOHYA_PREFIXES
    tensors: dict[str, Entry] = {}
    for component, named in modules.items():
        for module, (roles, alpha) in named.items():
            name = f"{prefixes[component]}_{module.replace('.', '_')}"
            tensors |= _kohya_module(name, roles, alpha, storage)
    _write_hashed(path, tensors, dict(metadata))
    if base.family == "sdxl":
        return _to_sgm_names(path)
    return "kohya"


Module = tuple[dict[str, Any], tuple[float, int]]
"""A module's tensors by PEFT role (``lora_A.weight``, ``lokr_w1``…), and its alpha and PEFT rank."""


def _modules(state: Mapping[str, Any], alphas: Mapping[str, tuple[float, int]], *, text: bool) -> dict[str, Module]:
    """PEFT's flat state grouped by module path (text encoders' paths in the ``text_model.`` spelling)."""
    out: dict[str, Module] = {}
    for key, value in state.items():
        role = next((r for r in (*PEFT_ROLES, *LYCORIS_ROLES) if key.endswith(f".{r}")), None)
        if role is None:
            raise errors.TrainingError(f"unexpected adapter tensor {key}: lorahub writes LoRA, DoRA, LoKr, LoHa")
        module = key.removesuffix(f".{role}")
        written = module if not text or module.startswith("text_model.") else f"text_model.{module}"
        out.setdefault(written, ({}, alphas[module]))[0][role] = value
    return out


def _kohya_module(name: str, roles: Mapping[str, Any], scale: tuple[float, int], storage: str) -> dict[str, Entry]:
    import torch

    alpha, rank = scale
    out = {f"{name}.alpha": _entry(torch.tensor(alpha, dtype=torch.float32), "F32")}
    for role, value in _lycoris_scaled(roles, alpha, rank).items():
        if role == "lora_magnitude_vector":  # PEFT [out] (conv [1, out, 1, 1]) → kohya/LyCORIS [out, 1, …]
            up = roles["lora_B.weight"]
            out[f"{name}.dora_scale"] = _entry(value.reshape(up.shape[0], *([1] * (up.dim() - 1))), storage)
        else:
            out[f"{name}.{KOHYA_ROLES.get(role, role)}"] = _entry(value, storage)
    return out


def _lycoris_scaled(roles: Mapping[str, Any], alpha: float, rank: int) -> Mapping[str, Any]:
    """A LoKr of two whole factors: LyCORIS (and lorahub) ignore its alpha, PEFT scales it by alpha/r; the scale is
    folded into ``lokr_w1`` (ΔW is bilinear in the factors), so every reader gets PEFT's ΔW."""
    if "lokr_w1" in roles and "lokr_w2" in roles:
        return {**roles, "lokr_w1": roles["lokr_w1"] * (alpha / rank)}
    return roles


def _diffusers_file(
    modules: Mapping[str, Mapping[str, Module]], storage: str, metadata: Mapping[str, str]
) -> tuple[dict[str, Entry], dict[str, str]]:
    """``transformer.``/``text_encoder.`` + PEFT names. A LoRA (DoRA) gets diffusers' ``lora_adapter_metadata``
    (rank, alpha, targets per component); LoKr and LoHa modules an ``alpha`` tensor each, as LyCORIS writes."""
    import torch

    tensors: dict[str, Entry] = {}
    config: dict[str, Any] = {}
    for component, named in modules.items():
        prefix = DIFFUSERS_PREFIXES[component]
        for module, (roles, (alpha, rank)) in named.items():
            lora = "lora_A.weight" in roles
            for role, value in _lycoris_scaled(roles, alpha, rank).items():
                tensors[f"{prefix}.{module}.{role}"] = _entry(value, storage)
            if not lora:
                tensors[f"{prefix}.{module}.alpha"] = _entry(torch.tensor(alpha, dtype=torch.float32), "F32")
                continue
            config[f"{prefix}.r"] = rank
            config[f"{prefix}.lora_alpha"] = number(alpha)
            config.setdefault(f"{prefix}.target_modules", []).append(module)
            if "lora_magnitude_vector" in roles:
                config[f"{prefix}.use_dora"] = True
    header = {"format": "pt", **metadata}
    if config:
        header["lora_adapter_metadata"] = json.dumps(config, sort_keys=True)
    return tensors, header


def _entry(tensor: Any, storage: str) -> Entry:
    import torch

    dtype = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}[storage]
    data = tensor.detach().to("cpu", dtype=dtype).contiguous()
    return storage, tuple(data.shape), data.reshape(-1).view(torch.uint8).numpy().tobytes()


def _write_hashed(
    path: Path, tensors: Mapping[str, tuple[str, tuple[int, ...], bytes]], header: dict[str, str]
) -> None:
    """Write, then write again with the AutoV3 hash claims (the data section, which AutoV3 covers, is the same)."""
    write(path, tensors, header)
    autov3 = digest_file(path, read_header(path), check_values=False).hashes.autov3
    assert autov3 is not None
    write(path, tensors, {**header, "sshs_model_hash": autov3, "modelspec.hash_sha256": f"0x{autov3}"})


def _to_sgm_names(path: Path) -> str:
    """SDXL files in kohya's own spelling (SGM block names), converted exactly by lorahub's converter; a UNet
    whose geometry is not SDXL's keeps diffusers-path names (the converter refuses rather than guess)."""
    from lorahub.adapters.convert import convert

    converted = path.with_name(path.name + ".sgm")
    try:
        convert(path, converted, to="kohya")
    except errors.LorahubError:
        converted.unlink(missing_ok=True)
        return "kohya"
    converted.replace(path)
    return "kohya-sgm"


def kohya_metadata(facts: Mapping[str, Any]) -> dict[str, str]:
    """``ss_*`` and ``modelspec.*`` keys from the run's facts (every value a string, as safetensors requires)."""
    config, base = facts["config"], facts["base"]
    resolution = config["resolution"]
    hyper = {
        "ss_session_id": facts["run_id"],
        "ss_training_started_at": facts["started_epoch"],
        "ss_training_finished_at": facts["finished_epoch"],
        "ss_output_name": facts["name"],
        "ss_training_comment": f"trained with lorahub {facts['lorahub_version']}; lineage in the lorahub card",
        "ss_sd_model_name": base["name"],
        "ss_new_sd_model_hash": base["weights_digest"],
        "ss_base_model_version": BASE_MODEL_VERSION[base["family"]]
        + ("_v" if base["prediction_type"] == "v_prediction" else ""),
        "ss_v2": str(base["family"] == "sd2"),
        "ss_network_dim": config["rank"],
        "ss_network_alpha": config["alpha"],
        "ss_network_train_unet_only": str(not facts["text_encoders"]),
        "ss_learning_rate": config["lr"],
        "ss_unet_lr": config["lr"],
        "ss_text_encoder_lr": (config["text_encoder_lr"] or config["lr"]) if facts["text_encoders"] else "0",
        "ss_optimizer": facts["optimizer"],
        "ss_lr_scheduler": config["scheduler"],
        "ss_lr_warmup_steps": config["warmup"],
        "ss_max_train_steps": config["steps"],
        "ss_steps": facts["step"],
        "ss_gradient_accumulation_steps": config["grad_accum"],
        "ss_gradient_checkpointing": str(config["gradient_checkpointing"]),
        "ss_mixed_precision": facts["precision_used"],
        "ss_max_grad_norm": config["max_grad_norm"],
        "ss_seed": config["seed"],
        "ss_num_train_images": facts["images"],
        "ss_num_reg_images": facts["prior_images"],
        "ss_prior_loss_weight": config["prior_weight"],
        "ss_batch_size_per_device": config["batch"],
        "ss_total_batch_size": config["batch"] * config["grad_accum"] * config["processes"],
        "ss_resolution": f"({resolution}, {resolution})",
        "ss_cache_latents": str(config["cache_latents"]),
        "ss_dataset_dirs": json.dumps(facts["dataset_dirs"]),
        "ss_tag_frequency": json.dumps(facts["tag_frequency"]),
    }
    spec = {
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": ARCHITECTURE[base["family"]],
        "modelspec.implementation": "diffusers",
        "modelspec.title": facts["name"],
        "modelspec.date": facts["finished_at"],
        "modelspec.resolution": f"{resolution}x{resolution}",
        "modelspec.prediction_type": MODELSPEC_PREDICTION.get(base["prediction_type"], base["prediction_type"]),
        "modelspec.timestep_range": "0,1000",
    }
    if facts.get("trigger"):
        spec["modelspec.trigger_phrase"] = facts["trigger"]
    if facts.get("author"):
        spec["modelspec.author"] = facts["author"]
    hyper |= ss_settings(config, facts["bucket_sides"])
    return {key: str(value) for key, value in (hyper | network_metadata(config, facts["targets"]) | spec).items()}


def network_metadata(config: Mapping[str, Any], targets: list[str]) -> dict[str, str]:
    """``ss_network_module``/``ss_network_args`` as sd-scripts (LoRA) and LyCORIS (LoKr, LoHa, DoRA) record them."""
    network = config["network"]
    if network == "lora":
        return {"ss_network_module": "networks.lora", "ss_network_args": json.dumps({"target_modules": targets})}
    args: dict[str, str] = {"algo": "lora" if network == "dora" else network, "target_modules": ",".join(targets)}
    if network == "dora":
        args["dora_wd"] = "True"
    if network == "lokr":
        args["factor"] = str(config["lokr_factor"])
    return {"ss_network_module": "lycoris.kohya", "ss_network_args": json.dumps(args)}

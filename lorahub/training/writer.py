"""The trained adapter as a file A1111, ComfyUI, kohya and diffusers load, with the run's facts in its header.

SD 1.x/2.x and SDXL: kohya layout (``lora_unet_<module path with _>.lora_down/lora_up/alpha``, kohya's own rule),
so the true alpha travels with every module. For SDXL the names are then rewritten to the SGM spelling kohya itself
writes (``input_blocks_4_1_…``) through lorahub's exact converter when the UNet has the real SDXL geometry; a UNet
of another geometry (the tiny test pipelines) keeps the diffusers-path spelling, which diffusers, ComfyUI and
lorahub also read. FLUX: diffusers/PEFT layout (``transformer.<path>.lora_A/B`` with ``lora_adapter_metadata``):
kohya's FLUX layout fuses q/k/v and diffusers' converter for it hard-codes FLUX.1-dev's block counts.

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


def write_adapter(
    path: Path, lora: Mapping[str, Any], *, base: Base, rank: int, alpha: float, dtype: str, metadata: Mapping[str, str]
) -> str:
    """Write ``lora`` (peft's ``{module.lora_A.weight: tensor}``) to ``path``; returns the layout written
    (``kohya``, ``kohya-sgm`` or ``diffusers``)."""
    storage = SAFETENSORS_DTYPES[dtype]
    if base.family == "flux1":
        tensors = {f"transformer.{key}": _entry(value, storage) for key, value in lora.items()}
        config: dict[str, Any] = {"transformer.r": rank, "transformer.lora_alpha": number(alpha)}
        config["transformer.target_modules"] = sorted({key.rsplit(".", 2)[0] for key in lora})  # module paths
        header = {"format": "pt", **metadata, "lora_adapter_metadata": json.dumps(config, sort_keys=True)}
        _write_hashed(path, tensors, header)
        return "diffusers"
    _write_hashed(path, _kohya_tensors(lora, storage, alpha), dict(metadata))
    if base.family == "sdxl":
        return _to_sgm_names(path)
    return "kohya"


def _kohya_tensors(
    lora: Mapping[str, Any], storage: str, alpha: float
) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    """kohya's naming rule, ``("lora_unet." + path).replace(".", "_")`` (sd-scripts ``networks/lora.py``)."""
    import torch

    out: dict[str, Entry] = {}
    for key, value in lora.items():
        module, _, role = key.removesuffix(".weight").rpartition(".")
        if role not in ("lora_A", "lora_B"):
            raise errors.TrainingError(f"unexpected LoRA tensor {key}: only lora_A/lora_B are written")
        name = "lora_unet_" + module.replace(".", "_")
        suffix = "lora_down" if role == "lora_A" else "lora_up"
        out[f"{name}.{suffix}.weight"] = _entry(value, storage)
        out[f"{name}.alpha"] = _entry(torch.tensor(alpha, dtype=torch.float32), "F32")
    return out


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
        "ss_network_module": "networks.lora",
        "ss_network_dim": config["rank"],
        "ss_network_alpha": config["alpha"],
        "ss_network_args": json.dumps({"target_modules": facts["targets"]}),
        "ss_network_train_unet_only": "True",
        "ss_learning_rate": config["lr"],
        "ss_unet_lr": config["lr"],
        "ss_text_encoder_lr": "0",
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
        "ss_total_batch_size": config["batch"] * config["grad_accum"],
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
    return {key: str(value) for key, value in (hyper | spec).items()}

"""kohya sd-scripts' names for training settings, both ways: its config files and ``ss_*`` metadata in, the
``ss_*`` keys of lorahub's own settings out.

A kohya config (``train_network.py --config_file``: TOML, or the kohya_ss GUI's JSON with the same key names) and
the ``ss_*`` header of a LoRA it trained name the same settings; :data:`KEYS` maps each to a
:class:`~lorahub.training.config.TrainConfig` field (or a run option: base, data, name, prior) with the conversion
kohya's meaning needs. A key that cannot be mapped is never dropped silently: it is listed with the reason.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lorahub import errors

Convert = Callable[[Any], Any]


@dataclass
class Mapped:
    """What a kohya source gave: TrainConfig fields, run options, and the keys left over with the reason."""

    config: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)
    unmapped: list[str] = field(default_factory=list)

    def skip(self, key: str, value: Any, reason: str) -> None:
        self.unmapped.append(f"{key} = {value!r}: {reason}")


class _Unmappable(ValueError):
    """A value kohya allows whose meaning lorahub has no setting for (the message says why)."""


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(value)
    return int(float(value)) if isinstance(value, str) else int(value)


def _float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(value)
    return float(value)


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", ""):
        return False
    raise ValueError(value)


def _optional_positive(value: Any) -> float | None:
    """kohya writes 0 (GUI) or None for "off"."""
    number = _float(value)
    return number if number > 0 else None


def _text_encoder_lr(value: Any) -> float | None:
    """0 freezes the text encoders in kohya (``--text_encoder_lr 0``): lorahub's None."""
    return _optional_positive(value)


def resolution_of(value: Any) -> int:
    """``"512,512"``, ``"(512, 512)"``, ``[512, 512]`` or ``512`` → the side of lorahub's square; a non-square
    resolution becomes the square of the same area (rounded down to 8), which is what kohya's buckets keep."""
    if isinstance(value, list | tuple):
        sides = [_int(v) for v in value]
    elif isinstance(value, int) and not isinstance(value, bool):
        sides = [value]
    else:
        sides = [_int(v) for v in re.findall(r"\d+", str(value))]
    if len(sides) == 1:
        sides *= 2
    if len(sides) != 2:
        raise ValueError(value)
    return int(math.sqrt(sides[0] * sides[1])) // 8 * 8


def _scheduler(value: Any) -> str:
    name = str(value)
    if name == "cosine":
        return "cosine"
    if name in ("constant", "constant_with_warmup"):
        return "constant"
    raise _Unmappable(f"lorahub has the cosine and constant schedules, not {name}")


def _precision(value: Any) -> str:
    name = {"float": "no", "fp32": "no"}.get(str(value), str(value))
    if name not in ("no", "fp16", "bf16"):
        raise ValueError(value)
    return name


KEYS: dict[str, tuple[str, Convert]] = {
    "network_dim": ("rank", _int),
    "network_alpha": ("alpha", _float),
    "learning_rate": ("lr", _float),
    "unet_lr": ("lr", _float),
    "text_encoder_lr": ("text_encoder_lr", _text_encoder_lr),
    "max_train_steps": ("steps", _int),
    "train_batch_size": ("batch", _int),
    "resolution": ("resolution", resolution_of),
    "max_resolution": ("resolution", resolution_of),
    "lr_scheduler": ("scheduler", _scheduler),
    "lr_warmup_steps": ("warmup", _float),
    "mixed_precision": ("mixed_precision", _precision),
    "seed": ("seed", _int),
    "enable_bucket": ("buckets", _bool),
    "min_bucket_reso": ("min_bucket", _int),
    "max_bucket_reso": ("max_bucket", _int),
    "bucket_reso_steps": ("bucket_step", _int),
    "bucket_no_upscale": ("bucket_no_upscale", _bool),
    "random_crop": ("random_crop", _bool),
    "shuffle_caption": ("shuffle_captions", _bool),
    "keep_tokens": ("keep_tokens", _int),
    "caption_dropout_rate": ("caption_dropout", _float),
    "noise_offset": ("noise_offset", _float),
    "min_snr_gamma": ("min_snr_gamma", _optional_positive),
    "gradient_accumulation_steps": ("grad_accum", _int),
    "gradient_checkpointing": ("gradient_checkpointing", _bool),
    "cache_latents": ("cache_latents", _bool),
    "prior_loss_weight": ("prior_weight", _float),
    "max_grad_norm": ("max_grad_norm", _float),
    "save_every_n_steps": ("save_every", _int),
}
"""kohya config key → (TrainConfig field, conversion). ``unet_lr`` is read after ``learning_rate`` (kohya: it
overrides the learning rate of the UNet, which is what lorahub's ``lr`` trains)."""

RUN_KEYS = {
    "pretrained_model_name_or_path": "base",
    "train_data_dir": "data",
    "reg_data_dir": "prior",
    "output_name": "name",
}
NETWORK_KEYS = ("network_module", "network_args", "network_train_unet_only")
REASONS = {
    "optimizer_type": "lorahub trains with AdamW (8-bit AdamW on a GPU with bitsandbytes)",
    "optimizer": "lorahub trains with AdamW (8-bit AdamW on a GPU with bitsandbytes)",
    "max_train_epochs": "lorahub counts optimizer steps: give max_train_steps",
    "epoch": "lorahub counts optimizer steps: give max_train_steps",
    "cache_text_encoder_outputs": "lorahub caches text embeddings whenever captions do not vary",
    "output_dir": "lorahub catalogues every version in its home",
    "save_model_as": "lorahub writes .safetensors, catalogued",
    "dataset_config": "a dataset config is not read: give the data folder (N_name subfolders set repeats)",
}
SS_NAMES = {"train_batch_size": "ss_batch_size_per_device"}
"""kohya config keys whose ``ss_*`` metadata key is not simply ``ss_`` + the key."""
SS_FACTS = frozenset({
    "ss_session_id", "ss_training_started_at", "ss_training_finished_at", "ss_output_name", "ss_training_comment",
    "ss_sd_scripts_commit_hash", "ss_sd_model_name", "ss_sd_model_hash", "ss_new_sd_model_hash", "ss_vae_name",
    "ss_vae_hash", "ss_new_vae_hash", "ss_base_model_version", "ss_v2", "ss_steps", "ss_epoch", "ss_num_epochs",
    "ss_num_batches_per_epoch", "ss_num_train_images", "ss_num_reg_images", "ss_dataset_dirs", "ss_datasets",
    "ss_tag_frequency", "ss_bucket_info", "ss_total_batch_size", "ss_reg_dataset_dirs",
    "ss_caption_tag_dropout_rate", "ss_full_fp16",
})  # fmt: skip
"""``ss_*`` keys that record what happened (identity, counts, hashes), not a setting to reproduce."""


# --- reading -------------------------------------------------------------------------------------------------------


def from_kohya_config(values: Mapping[str, Any]) -> Mapped:
    """A kohya training config's keys as lorahub settings (see the module docstring)."""
    mapped = Mapped()
    ordered = sorted(values, key=lambda k: (k == "unet_lr", k))
    for key in ordered:
        value = values[key]
        if key in KEYS:
            _convert(mapped, key, value)
        elif key in RUN_KEYS:
            if value not in (None, ""):
                mapped.run[RUN_KEYS[key]] = str(value)
        elif key not in NETWORK_KEYS:
            mapped.skip(key, value, REASONS.get(key, "not a setting lorahub has"))
    _network(mapped, values.get("network_module"), _args_list(values.get("network_args")))
    _text_encoder(mapped, values.get("network_train_unet_only"))
    _warmup(mapped)
    return mapped


def from_ss_metadata(metadata: Mapping[str, str]) -> Mapped:
    """The settings recorded in a kohya-trained file's ``ss_*`` header (values are strings; ``"None"`` is
    absent)."""
    mapped = Mapped()
    ss_to_key = {SS_NAMES.get(key, f"ss_{key}"): key for key in KEYS}
    present = {k: v for k, v in metadata.items() if k.startswith("ss_") and v not in ("None", "")}
    for ss_key in sorted(present, key=lambda k: (k == "ss_unet_lr", k)):
        value = present[ss_key]
        if ss_key in ss_to_key:
            _convert(mapped, ss_key, value, key=ss_to_key[ss_key])
        elif ss_key not in SS_FACTS and ss_key.removeprefix("ss_") not in NETWORK_KEYS:
            mapped.skip(ss_key, value, REASONS.get(ss_key.removeprefix("ss_"), "not a setting lorahub has"))
    args = _args_json(present.get("ss_network_args"))
    _network(mapped, present.get("ss_network_module"), args)
    unet_only = present.get("ss_network_train_unet_only")
    if unet_only is not None:  # absent: kohya did not say, and nothing is assumed
        _text_encoder(mapped, unet_only)
    _warmup(mapped)
    return mapped


def _convert(mapped: Mapped, source: str, value: Any, *, key: str | None = None) -> None:
    name, convert = KEYS[key or source]
    try:
        mapped.config[name] = convert(value)
    except _Unmappable as exc:
        mapped.skip(source, value, str(exc))
    except (TypeError, ValueError):
        raise errors.TrainingError(
            f"kohya setting {source} = {value!r} is not a valid value for it",
            hint="Fix the value in the kohya config (the same one kohya would refuse).",
        ) from None


def _warmup(mapped: Mapped) -> None:
    """kohya's ``lr_warmup_steps`` below 1 is a fraction of the steps."""
    warmup = mapped.config.get("warmup")
    if warmup is None:
        return
    if warmup < 1 and warmup != 0:
        if "steps" not in mapped.config:
            mapped.skip("lr_warmup_steps", warmup, "a fraction of max_train_steps, which is not given")
            del mapped.config["warmup"]
            return
        warmup *= mapped.config["steps"]
    mapped.config["warmup"] = round(warmup)


def _text_encoder(mapped: Mapped, unet_only: Any) -> None:
    """kohya trains the text encoders (at ``text_encoder_lr``, else the learning rate) unless
    ``network_train_unet_only`` or a text-encoder learning rate of 0 says otherwise."""
    frozen = (unet_only is not None and _bool(unet_only)) or mapped.config.get("text_encoder_lr", 1.0) is None
    mapped.config["train_text_encoder"] = not frozen
    if frozen:
        mapped.config.pop("text_encoder_lr", None)


NETWORK_MODULES = {"networks.lora": "lora", "networks.lora_flux": "lora", "networks.lora_sd3": "lora"}
LYCORIS_ALGOS = {"lora": "lora", "locon": "lora", "lokr": "lokr", "loha": "loha"}


def _network(mapped: Mapped, module: Any, args: dict[str, str]) -> None:
    """``networks.lora`` is LoRA; ``lycoris.kohya`` with ``algo=lokr|loha|lora`` (``dora_wd=True``: DoRA)."""
    if module is None:
        return
    args = dict(args)
    if module in NETWORK_MODULES:
        mapped.config["network"] = NETWORK_MODULES[module]
    elif module == "lycoris.kohya" and args.get("algo", "lora").lower() in LYCORIS_ALGOS:
        network = LYCORIS_ALGOS[args.pop("algo", "lora").lower()]
        if _bool(args.pop("dora_wd", "false")):
            network = "dora" if network == "lora" else network
        mapped.config["network"] = network
        if network == "lokr" and "factor" in args:
            mapped.config["lokr_factor"] = _int(args.pop("factor"))
    else:
        mapped.skip("network_module", module, "lorahub trains LoRA, LoKr, LoHa and DoRA (networks.lora, lycoris)")
    for key, value in sorted(args.items()):
        mapped.skip(f"network_args.{key}", value, "not a setting lorahub has")


def _args_list(value: Any) -> dict[str, str]:
    """kohya's ``network_args = ["algo=lokr", "conv_dim=4"]`` (or one string of them)."""
    if value is None:
        return {}
    items = value if isinstance(value, list) else str(value).split()
    out: dict[str, str] = {}
    for item in items:
        key, _, arg = str(item).partition("=")
        out[key.strip()] = arg.strip()
    return out


def _args_json(value: str | None) -> dict[str, str]:
    """``ss_network_args`` is a JSON object of strings; lorahub's own files put its targets there."""
    if not value:
        return {}
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        return _args_list(value)
    if not isinstance(parsed, dict):
        return {}
    return {str(k): str(v) for k, v in parsed.items() if k != "target_modules"}


# --- writing -------------------------------------------------------------------------------------------------------

SS_WRITTEN = {
    "ss_enable_bucket": "buckets",
    "ss_min_bucket_reso": "min_bucket",
    "ss_max_bucket_reso": "max_bucket",
    "ss_bucket_no_upscale": "bucket_no_upscale",
    "ss_random_crop": "random_crop",
    "ss_shuffle_caption": "shuffle_captions",
    "ss_keep_tokens": "keep_tokens",
    "ss_caption_dropout_rate": "caption_dropout",
    "ss_noise_offset": "noise_offset",
    "ss_min_snr_gamma": "min_snr_gamma",
}
"""The data and loss settings in the header, under kohya's names (its ``train_network.py`` writes the same)."""


def ss_settings(config: Mapping[str, Any], sides: tuple[int, int]) -> dict[str, str]:
    """``ss_*`` values of the card-form ``config`` (min/max bucket: the sides used, as kohya records them)."""
    values = dict(config) | {"min_bucket": sides[0], "max_bucket": sides[1]}
    return {key: str(values[name]) for key, name in SS_WRITTEN.items()}


def dataset_dirs(folder: str, rels: list[tuple[str, int]]) -> dict[str, dict[str, int]]:
    """kohya's ``ss_dataset_dirs``: ``{folder: {"n_repeats": N, "img_count": images}}`` from each image's path
    and repeats; images at the top of the dataset count under its own folder name."""
    out: dict[str, dict[str, int]] = {}
    for rel, repeats in rels:
        name = rel.split("/")[0] if "/" in rel else folder
        entry = out.setdefault(name, {"n_repeats": repeats, "img_count": 0})
        entry["img_count"] += 1
    return out

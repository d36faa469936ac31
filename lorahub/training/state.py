"""Checkpoint state beside each catalogued checkpoint: what resuming needs beyond the adapter.

Written as ``state.safetensors`` (every tensor: the fp32 adapter weights as trained (``lora.`` the denoiser's,
``te.<encoder>.`` the text encoders'), the moving average's (``ema.N``), the optimizer's moments, the random
generators' states, the data order) plus ``state.json`` (the rest: step, loss history, optimizer param groups, the
learning-rate schedule, the run's identity and settings). Nothing is pickled, so a checkpoint is as safe to read
as any adapter file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorahub import errors
from lorahub.files.atomic import atomic_write
from lorahub.training import networks
from lorahub.training.loop import Trainer

SCHEMA = "lorahub.training-state/v1"
STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"


@dataclass(frozen=True)
class SavedState:
    directory: Path
    info: dict[str, Any]
    """state.json: ``run_id``, ``step``, ``config`` (the card form), ``adapter_digest``, …"""


def save_state(trainer: Trainer, directory: Path, info: dict[str, Any]) -> Path:
    """Write the trainer's resumable state to ``directory`` (created); ``info`` is stored in state.json.

    Each file is replaced atomically, never half-written: a resumed run that reaches the same step again rewrites
    this folder over a state that may still be needed."""
    from safetensors.torch import save

    torch = trainer.torch
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, Any] = {f"lora.{k}": v for k, v in trainer.lora_state().items()}
    for name in trainer.text_encoders:
        tensors |= {f"te.{name}.{k}": v for k, v in networks.adapter_state(trainer.trained[name]).items()}
    if trainer.ema is not None:
        tensors |= trainer.ema.tensors()
    optimizer = trainer.optimizer.state_dict()
    plain_state: dict[str, dict[str, Any]] = {}
    for index, values in optimizer["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                plain_state.setdefault(str(index), {})[key] = value
    tensors["rng.data"] = trainer.data_gen.get_state()
    tensors["rng.noise"] = trainer.noise_gen.get_state().cpu()
    tensors["order.instance"] = torch.tensor(trainer.order or [-1], dtype=torch.int64)
    tensors["order.prior"] = torch.tensor(trainer.prior_order or [-1], dtype=torch.int64)
    atomic_write(directory / STATE_TENSORS, [save(tensors)])
    document = {
        "schema": SCHEMA,
        **info,
        "step": trainer.run.step,
        "losses": [repr(x) for x in trainer.run.losses],
        "optimizer": {"param_groups": optimizer["param_groups"], "plain_state": plain_state},
        "lr_schedule": trainer.lr_schedule.state_dict(),
        "scaler": trainer.scaler.state_dict() if trainer.scaler is not None else None,
        "ema_step": trainer.ema.step if trainer.ema is not None else None,
    }
    data = (json.dumps(document, indent=1, sort_keys=True) + "\n").encode()
    atomic_write(directory / STATE_JSON, lambda f: f.write(data))
    return directory


def read_state(directory: Path) -> SavedState:
    """The state.json of a checkpoint folder (the tensors are read by :func:`restore_state`)."""
    directory = Path(directory)
    path = directory / STATE_JSON
    if not path.is_file() or not (directory / STATE_TENSORS).is_file():
        raise errors.TrainingError(
            f"{directory} holds no lorahub training state",
            hint="Resume from a checkpoint version (NAME@V) trained by lorahub, or its state folder.",
        )
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise errors.TrainingError(f"{path}: not JSON ({exc})") from None
    if not isinstance(info, dict) or info.get("schema") != SCHEMA:
        raise errors.TrainingError(f"{path}: not a {SCHEMA} document")
    return SavedState(directory, info)


def restore_state(trainer: Trainer, saved: SavedState) -> None:
    """Put the checkpoint's weights, optimizer, schedule, generators and data order back into ``trainer``."""
    from safetensors.torch import load_file

    tensors = load_file(str(saved.directory / STATE_TENSORS))
    for name, prefix in {networks.DENOISER: "lora.", **{n: f"te.{n}." for n in trainer.text_encoders}}.items():
        adapter = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            networks.load_state(trainer.trained[name], adapter, name)
        except errors.TrainingError as exc:
            raise errors.TrainingError(f"{saved.directory}: {exc.message}") from None
    info = saved.info
    if trainer.ema is not None:
        trainer.ema.restore(tensors, int(info["ema_step"]))
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value.to(trainer.device)
    for index, values in info["optimizer"]["plain_state"].items():
        state.setdefault(int(index), {}).update(values)
    trainer.optimizer.load_state_dict({"state": state, "param_groups": info["optimizer"]["param_groups"]})
    trainer.lr_schedule.load_state_dict(info["lr_schedule"])
    if trainer.scaler is not None and info.get("scaler"):
        trainer.scaler.load_state_dict(info["scaler"])
    trainer.data_gen.set_state(tensors["rng.data"])
    trainer.noise_gen.set_state(tensors["rng.noise"])  # generator states are CPU byte tensors, CUDA ones too
    trainer.order = [i for i in tensors["order.instance"].tolist() if i >= 0]
    trainer.prior_order = [i for i in tensors["order.prior"].tolist() if i >= 0]
    trainer.run.step = int(info["step"])
    trainer.run.losses = [float(x) for x in info["losses"]]

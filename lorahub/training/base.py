"""The base pipeline a run trains on: what it is (read from its folder without torch) and its weights digest
(:mod:`lorahub.files.folders` says what the digest covers, and why a cache snapshot's weights are not re-hashed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorahub import errors
from lorahub.files.folders import WEIGHT_SUFFIXES, file_sha256, folder_digest, is_digested, model_files

PIPELINES: dict[str, tuple[str, str]] = {
    "StableDiffusionPipeline": ("unet", "sd"),
    "StableDiffusionXLPipeline": ("unet", "sdxl"),
    "FluxPipeline": ("transformer", "flux1"),
}
"""diffusers pipeline class → (denoiser component, family kind)."""


@dataclass(frozen=True)
class Base:
    path: Path
    name: str
    pipeline_class: str
    family: str
    """``sd1``, ``sd2``, ``sdxl`` or ``flux1`` (lorahub's family names)."""
    denoiser: str
    """``unet`` or ``transformer``."""
    prediction_type: str
    """``epsilon``, ``v_prediction``, ``sample`` or ``flow`` (FLUX's flow matching)."""
    revision: str | None = None
    """The Hugging Face revision (commit) of a base found in the cache; recorded only when known."""

    def card_dict(self, weights_digest: str) -> dict[str, Any]:
        facts = {
            "name": self.name,
            "weights_digest": weights_digest,
            "pipeline": self.pipeline_class,
            "family": self.family,
            "prediction_type": self.prediction_type,
        }
        return facts | ({"revision": self.revision} if self.revision else {})


def describe_base(path: Path, name: str | None = None, *, revision: str | None = None) -> Base:
    """Read ``model_index.json`` and the scheduler and denoiser configs of a diffusers pipeline folder."""
    path = Path(path)
    index = _json(path / "model_index.json", path)
    pipeline_class = str(index.get("_class_name", ""))
    if pipeline_class not in PIPELINES:
        raise errors.TrainingError(
            f"{path} is a {pipeline_class or 'unknown'} pipeline; lorahub trains {', '.join(PIPELINES)}",
            hint="Pass a diffusers pipeline folder of SD 1.x/2.x, SDXL or FLUX.1 (`lorahub dev tiny-pipeline` "
            "writes a small one).",
        )
    denoiser, kind = PIPELINES[pipeline_class]
    scheduler = _json(path / "scheduler" / "scheduler_config.json", path)
    denoiser_config = _json(path / denoiser / "config.json", path)
    if kind == "flux1":
        family, prediction = "flux1", "flow"
    else:
        prediction = str(scheduler.get("prediction_type") or "epsilon")
        family = "sdxl" if kind == "sdxl" else ("sd2" if denoiser_config.get("cross_attention_dim") == 1024 else "sd1")
    return Base(path, name or path.resolve().name, pipeline_class, family, denoiser, prediction, revision)


def weights_digest(path: Path) -> str:
    """SHA-256 over ``relative/path sha256`` lines of the folder's weight and config files (sorted by path)."""
    path = Path(path)
    files = [p for p in model_files(path) if is_digested(p)]
    if not any(p.suffix in WEIGHT_SUFFIXES for p in files):
        raise errors.TrainingError(f"{path} holds no weight files", hint="Pass a diffusers pipeline folder.")
    return folder_digest({p.relative_to(path).as_posix(): file_sha256(p) for p in files})


def _json(path: Path, base: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise errors.TrainingError(
            f"{base} is not a diffusers pipeline folder: {path.relative_to(base)} is missing",
            hint="Pass the folder written by save_pretrained (it has model_index.json).",
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise errors.TrainingError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise errors.TrainingError(f"{path}: expected a JSON object")
    return data

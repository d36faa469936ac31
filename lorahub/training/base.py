"""The base pipeline a run trains on: what it is (read from its folder without torch) and its weights digest.

The weights digest pins the exact base: SHA-256 over the sorted ``relative/path sha256`` lines of every weight and
config file in the folder, so a re-saved copy with the same bytes has the same digest and a changed config (which
changes the model as surely as a changed weight) does not.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorahub import errors

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf")
CONFIG_NAMES = ("model_index.json", "config.json", "scheduler_config.json")
CHUNK = 1 << 20

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
    files = sorted(
        p
        for p in path.rglob("*")
        # A `.cache` inside the folder is huggingface_hub's download bookkeeping; one above it (the Hugging Face
        # cache itself, ~/.cache/...) is where bases live.
        if p.is_file()
        and (p.suffix in WEIGHT_SUFFIXES or p.name in CONFIG_NAMES)
        and ".cache" not in p.relative_to(path).parts
    )
    if not any(p.suffix in WEIGHT_SUFFIXES for p in files):
        raise errors.TrainingError(f"{path} holds no weight files", hint="Pass a diffusers pipeline folder.")
    lines = [f"{p.relative_to(path).as_posix()} {_sha256(p)}\n" for p in files]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


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

"""lorahub: a local registry and SDK for LoRA-family adapters of image diffusion models.

The package root is the SDK. Importing it is cheap: submodules (and torch, where needed) load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lorahub.errors import LorahubError
from lorahub.version import __version__

__all__ = [
    "Hub",
    "LorahubError",
    "Report",
    "TrainConfig",
    "__version__",
    "apply_prompt",
    "errors",
    "inspect",
    "load",
    "stack",
    "train",
]

if TYPE_CHECKING:
    from lorahub import errors
    from lorahub.sdk.entry import apply_prompt, load, stack
    from lorahub.sdk.hub import Hub
    from lorahub.sdk.inspect import Report, inspect
    from lorahub.sdk.training import train
    from lorahub.training.config import TrainConfig

_LAZY = {
    "Hub": ("lorahub.sdk.hub", "Hub"),
    "inspect": ("lorahub.sdk.inspect", "inspect"),
    "Report": ("lorahub.sdk.inspect", "Report"),
    "errors": ("lorahub.errors", None),
    "load": ("lorahub.sdk.entry", "load"),
    "stack": ("lorahub.sdk.entry", "stack"),
    "apply_prompt": ("lorahub.sdk.entry", "apply_prompt"),
    "train": ("lorahub.sdk.training", "train"),
    "TrainConfig": ("lorahub.training.config", "TrainConfig"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'lorahub' has no attribute {name!r}")
    import importlib

    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

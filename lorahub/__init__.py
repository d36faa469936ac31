"""lorahub: a local registry and SDK for LoRA-family adapters of image diffusion models."""

from __future__ import annotations

__version__ = "0.1.0"

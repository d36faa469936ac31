"""Combining adapters, and baking adapters into base checkpoints (streaming, tensor by tensor)."""

from __future__ import annotations

from lorahub.merge.bake import AdapterSource, BakeReport, bake

__all__ = ["AdapterSource", "BakeReport", "bake"]

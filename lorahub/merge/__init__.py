"""Combining adapters with each other (combine.py), and baking them into base checkpoints (bake.py, streaming)."""

from __future__ import annotations

from lorahub.merge.bake import AdapterSource, BakeReport, bake

__all__ = ["AdapterSource", "BakeReport", "bake"]

"""Combining adapters with each other (merge) and with base checkpoints (bake)."""

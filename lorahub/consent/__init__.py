"""Dataset consent: scan a training folder into a manifest (per-image hashes, captions, sources, consent and the
opt-out signals embedded in the images), and check it before training. Light to import: c2pa-python is loaded
only when images are scanned."""

from __future__ import annotations

from lorahub.consent.check import ConsentReport, check
from lorahub.consent.manifest import Item, Manifest, load, scan
from lorahub.consent.signals import Signal

__all__ = ["ConsentReport", "Item", "Manifest", "Signal", "check", "load", "scan"]

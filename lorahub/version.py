"""The package's version, in a module of its own: every layer states it (provenance claims, training records, the
download User-Agent), and the package root, which re-exports it, also names the SDK for its lazy attributes."""

from __future__ import annotations

__version__ = "0.1.0"

"""A small real home for the web tests: adapters added and scanned in place (with a preview beside one), a merge,
a trained version with its loss curve and one resized from it, and an image signed with Content Credentials.

Everything goes through the SDK as a user's commands would: files from ``lorahub.dev.example_lora``, derived
versions through :func:`lorahub.sdk.derive.add_derived` (what merge, convert and resize call after their maths),
the trained version with the training record the trainer writes (its loss curve included).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lorahub import Hub
from lorahub.dev.example_lora import write_example_lora
from lorahub.sdk.adding import AddOptions
from lorahub.sdk.derive import add_derived

PREVIEW_WIDTH = 240
LOSSES = ["0.1843", "0.1522", "0.1391", "0.1244", "0.1198", "0.1102", "0.1075", "0.0987", "0.0954", "0.0931"]


@dataclass(frozen=True)
class DemoHome:
    hub: Hub
    library: Path
    image: Path
    preview: Path


def _png(seed: int, width: int = PREVIEW_WIDTH, height: int = 180) -> bytes:
    """A smooth colourful picture (a preview should look like one in the screenshots)."""
    from PIL import Image

    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 6.28, 3)
    channels = [(np.sin(6 * x + 4 * y + p) * 0.5 + 0.5) * 255 for p in phase]
    pixels = np.stack(channels, axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, "PNG")
    return buffer.getvalue()


def training_record(name: str, losses: list[str]) -> dict[str, Any]:
    """A ``lorahub.training/v1`` record as the trainer writes it (the fields the pages read)."""
    return {
        "schema": "lorahub.training/v1",
        "run_id": f"run-{name}",
        "final": True,
        "trainer": {"tool": "lorahub", "identity": {"fingerprint": "0" * 64, "name": "Alice"}},
        "base_model": {"family": "sd1", "name": "tiny-sd15", "weights_digest": None},
        "objective": "epsilon",
        "dataset": {"images": 12, "excluded": [{"path": "img-3.png", "reasons": ["opted out"]}],
                    "consent": {"status": "mixed"}},
        "hyperparameters": {"lr": "0.0001", "rank": 4, "network_alpha": 4, "optimizer": "adamw",
                            "targets": ["to_q", "to_k", "to_v", "to_out.0"]},
        "seed": 0,
        "precision": {"requested": "bf16", "used": "no"},
        "steps": {"done": 10 * len(losses), "total": 10 * len(losses)},
        "finished_at": "2026-01-01T00:00:00Z",
        "loss_curve": {"every": 10, "points": [[10 * (i + 1), loss] for i, loss in enumerate(losses)]},
    }  # fmt: skip


def build(root: Path, *, with_image: bool = True) -> DemoHome:
    hub = Hub.open(root / "home")
    hub.create_identity("Alice Maker <alice@studio.example>")
    files = root / "files"
    files.mkdir()
    library = root / "library"
    (library / "pixels").mkdir(parents=True)
    (library / "ink").mkdir()

    write_example_lora(library / "pixels" / "pixel-art.safetensors", rank=2, seed=0, name="pixel-art")
    preview = library / "pixels" / "pixel-art.png"
    preview.write_bytes(_png(0))
    options = AddOptions(license="MIT", triggers=["pixel art", "8bit"], description="Crisp pixel art.")
    hub.scan([library / "pixels"], options)

    write_example_lora(library / "ink" / "ink.safetensors", rank=2, seed=1, name="ink")
    (library / "ink" / "ink.preview.png").write_bytes(_png(5))
    options = AddOptions(
        name="ink", license="creativeml-openrail-m", triggers=["inky lines"], commercial_use=["image"],
        description="Ink drawings with bold lines.", tags=["lineart"],
    )  # fmt: skip
    hub.scan([library / "ink" / "ink.safetensors"], options)

    write_example_lora(files / "blend.safetensors", rank=2, seed=2, name="blend")
    parents = [(hub.version("pixel-art"), {"weight": "0.7"}), (hub.version("ink"), {"weight": "0.4"})]
    options = AddOptions(name="blend", license="MIT", description="pixel-art and ink, merged.")
    add_derived(hub, files / "blend.safetensors", parents, relation="merged-from", action="merge", options=options)

    write_example_lora(files / "style.safetensors", rank=2, seed=3, name="style")
    options = AddOptions(
        name="style", license="MIT", triggers=["sks style"], training=training_record("style", LOSSES),
        description="Fine-tuned from blend on twelve images.",
    )  # fmt: skip
    add_derived(hub, files / "style.safetensors", [(hub.version("blend"), {})], relation="trained-from",
                action="train", options=options)  # fmt: skip

    write_example_lora(files / "style-small.safetensors", seed=4, rank=1, name="style")
    add_derived(hub, files / "style-small.safetensors", [(hub.version("style@1"), {"rank": 2})],
                relation="resized-from", action="resize")  # fmt: skip

    image = root / "images" / "cat.png"
    if with_image:
        image.parent.mkdir()
        adapters = hub.adapter_uses(["blend:0.8"])
        hub.sign_image(_png(7, 128), base=hub.base_ref("tiny-sd15"), adapters=adapters, out=image)
    return DemoHome(hub, library, image, preview)

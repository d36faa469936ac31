"""`lorahub.provenance.sign_image` against a bare c2pa-python `Builder.sign` of a 1024×1024 PNG.

Both sign the same PNG bytes in memory with the same manifest (the one sign_image builds), the same settings (no
thumbnail, verify-after-sign on), the same identity key and certificate chain, through the same kind of signer
(`Signer.from_callback` with the key's ECDSA P-256 signature); so the ratio is lorahub's own overhead: sniffing
the format, building the manifest, checking the inputs. A second baseline, `Signer.from_info` with the key as PEM
(signing inside the C2PA library), is shown for scale. Rounds alternate the methods; the figures are medians.

    python benchmarks/c2pa_sign.py [--rounds 30] [--image photo|flat|noise]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from hash_throughput import cpu_model  # type: ignore[import-not-found]
from PIL import Image

from lorahub import Hub
from lorahub.provenance import AdapterUse, BaseRef, C2paCredentials, sign_image
from lorahub.provenance.sign import (
    SIGN_SETTINGS,
    GenerationParameters,
    build_manifest,
    c2pa_module,
    training_mining_entries,
)

SIZE = 1024
BASE = BaseRef("stabilityai/stable-diffusion-xl-base-1.0", "0" * 64, "CreativeML-OpenRAIL-M", family="sdxl")
ADAPTERS = [
    AdapterUse("pixel-art", "a" * 64, 0.7, 2, "MIT", ("f" * 64,), "b" * 64, "licensed"),
    AdapterUse("watercolor", "c" * 64, 0.3, 1, "CC-BY-4.0", ("e" * 64,), "d" * 64, "consented"),
]
PARAMS = {"prompt": "a lighthouse at dusk", "negative_prompt": "blurry", "seed": 1234, "steps": 30}


def make_png(kind: str) -> bytes:
    """``photo``: a gradient with Gaussian noise (a generated image's entropy, about 2.4 MB); ``flat``: one
    colour; ``noise``: uniform random pixels (the worst case, about 3 MB)."""
    rng = np.random.default_rng(0)
    if kind == "flat":
        pixels = np.full((SIZE, SIZE, 3), (40, 90, 160), np.uint8)
    elif kind == "noise":
        pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    else:
        ramp = np.linspace(0, 255, SIZE, dtype=np.float32)
        across, down = np.meshgrid(ramp, ramp)
        base = np.stack([across, down, np.full_like(across, 128)], -1)
        pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, "PNG")
    return buffer.getvalue()


def lorahub_sign(png: bytes, credentials: C2paCredentials) -> Callable[[], bytes]:
    return lambda: sign_image(png, base=BASE, adapters=ADAPTERS, signer=credentials, **PARAMS).data  # type: ignore[arg-type]


def bare_sign(png: bytes, manifest: dict[str, object], make_signer: Callable[[], object]) -> Callable[[], bytes]:
    c2pa = c2pa_module()

    def run() -> bytes:
        context = c2pa.Context.from_dict(SIGN_SETTINGS)
        destination = io.BytesIO()
        with c2pa.Builder(manifest, context=context) as builder:
            builder.sign(make_signer(), "image/png", io.BytesIO(png), destination)
        return destination.getvalue()

    return run


def timed(function: Callable[[], bytes]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--image", choices=("photo", "flat", "noise"), default="photo")
    args = parser.parse_args()
    c2pa = c2pa_module()
    png = make_png(args.image)
    with tempfile.TemporaryDirectory() as tmp:
        hub = Hub.open(Path(tmp) / "home")
        hub.create_identity("Bench <bench@lorahub.example>")
        credentials = hub.c2pa_credentials()
        # The key store's documented layout: <home>/keys/<fp16>.key.pem, PKCS#8, unencrypted without a passphrase.
        key_pem = (hub.settings.keys_dir / f"{(credentials.key_fingerprint or '')[:16]}.key.pem").read_bytes()
    manifest = build_manifest(
        base=BASE,
        adapters=ADAPTERS,
        parameters=GenerationParameters(**PARAMS),  # type: ignore[arg-type]
        training_mining=training_mining_entries(None),
        kind="png",
        title="lorahub-image.png",
    )
    es256 = c2pa.C2paSigningAlg.ES256
    methods = {
        "sign_image": lorahub_sign(png, credentials),
        "bare callback": bare_sign(
            png, manifest, lambda: c2pa.Signer.from_callback(credentials.sign, es256, credentials.chain_pem, None)
        ),
        "bare from_info": bare_sign(
            png,
            manifest,
            lambda: c2pa.Signer.from_info(c2pa.C2paSignerInfo(es256, credentials.chain_pem.encode(), key_pem, None)),
        ),
    }
    for method in methods.values():  # warm up: the native library, caches
        method()
    seconds: dict[str, list[float]] = {name: [] for name in methods}
    ratios = []
    for _ in range(args.rounds):
        round_times = {name: timed(method) for name, method in methods.items()}
        for name, value in round_times.items():
            seconds[name].append(value)
        ratios.append(round_times["sign_image"] / round_times["bare callback"])
    signed = methods["sign_image"]()
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; c2pa-python {c2pa.__version__}")
    print(f"image: {SIZE}x{SIZE} PNG ({args.image}), {len(png) / 1e6:.2f} MB -> signed {len(signed) / 1e6:.2f} MB")
    print(f"rounds: {args.rounds}")
    for name, values in seconds.items():
        print(f"{name:>15}: median {statistics.median(values) * 1000:.1f} ms  (min {min(values) * 1000:.1f})")
    print(f"median ratio sign_image / bare callback: {statistics.median(ratios):.2f}")
    ratio_of_medians = statistics.median(seconds["sign_image"]) / statistics.median(seconds["bare callback"])
    print(f"ratio of medians: {ratio_of_medians:.2f}")


if __name__ == "__main__":
    main()

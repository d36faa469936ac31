"""``generate``: a tiny pipeline, an adapter named in the prompt, a signed image that reads back Trusted."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lorahub import Hub, errors
from lorahub.sdk.adding import AddOptions
from tests.sdk.pipes import make_adapter

pytest.importorskip("diffusers")
pytest.importorskip("c2pa")


@pytest.fixture
def base(tiny_bases: Mapping[str, Path]) -> Path:
    return tiny_bases["sd1"]


def test_generate_signs_an_image_naming_base_and_adapters(hub: Hub, tmp_path: Path, base: Path) -> None:
    path = make_adapter("sd1", tmp_path / "a", seed=1)
    hub.add(path, AddOptions(name="ink", license="MIT", triggers=["inky"]))
    plain = hub.generate(base, "a lighthouse", out=tmp_path / "plain.png", steps=2, size=(64, 64), seed=3)
    styled = hub.generate(
        base, "a lighthouse <lora:ink:0.8>", out=tmp_path / "ink.png", steps=2, size=(64, 64), seed=3, use="commercial"
    )
    assert styled.prompt == "a lighthouse, inky" and styled.license_verdict in ("allowed", "allowed-with-obligations")
    pixels = [np.asarray(Image.open(p), dtype=np.float64) for p in (plain.image.path, styled.image.path)]
    assert np.abs(pixels[0] - pixels[1]).max() > 1  # the adapter changed the image
    report = hub.inspect_image(tmp_path / "ink.png").as_dict()
    assert report["state"] == "Trusted"
    [adapter] = report["adapters"]
    assert adapter["known"] and adapter["content_digest"] == hub.version("ink").content_digest
    assert adapter["weight"] == 0.8 and adapter["license"] == "MIT"
    assert report["base"]["digest"] == hub.base_ref(base).digest
    events = hub.audit(adapter="ink", action="generate")
    assert [e["details"]["image_sha256"] for e in events] == [styled.image.sha256]


def test_a_forbidden_use_generates_nothing(hub: Hub, tmp_path: Path, base: Path) -> None:
    hub.add(make_adapter("sd1", tmp_path / "a", seed=1), AddOptions(name="nc", license="CC-BY-NC-4.0"))
    with pytest.raises(errors.LicenseForbiddenError):
        hub.generate(base, "x <lora:nc>", out=tmp_path / "x.png", steps=1, size=(64, 64), use="commercial")
    assert not (tmp_path / "x.png").exists() and not hub.audit(action="generate")

"""``lorahub.load`` / ``stack`` / ``apply_prompt`` on tiny real diffusers pipelines, against diffusers itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import lorahub
from lorahub import Hub, errors
from lorahub.sdk.adding import AddOptions
from tests.sdk.pipes import image, make_adapter, tiny

pytest.importorskip("diffusers")
pytest.importorskip("peft")

FAMILIES = ["sd1", "sdxl", "flux1"]


def _reference(family: str, files: list[tuple[Path, float]]) -> np.ndarray:
    """What diffusers alone makes of the same files and weights."""
    pipe = tiny(family)
    names = []
    for i, (path, _) in enumerate(files):
        pipe.load_lora_weights(str(path), adapter_name=f"ref{i}")
        names.append(f"ref{i}")
    pipe.set_adapters(names, adapter_weights=[w for _, w in files])
    return image(pipe, family)


def _no_adapters(pipe: Any) -> bool:
    return not any(pipe.get_list_adapters().values()) if hasattr(pipe, "get_list_adapters") else True


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return {}


def _add(hub: Hub, path: Path, name: str, **options: Any) -> None:
    hub.add(path, AddOptions(name=name, license=options.pop("license", "MIT"), **options))


@pytest.mark.parametrize("family", FAMILIES)
def test_load_matches_diffusers_and_the_handle_changes_and_unloads(hub: Hub, tmp_path: Path, family: str) -> None:
    path = make_adapter(family, tmp_path / "a", seed=1, text_encoder=family == "sd1")
    _add(hub, path, "style")
    pipe = tiny(family)
    base = image(pipe, family)
    handle = lorahub.load("style", pipe, weight=0.7, hub=hub)
    ours = image(pipe, family)
    np.testing.assert_allclose(ours, _reference(family, [(path, 0.7)]), atol=1e-5)
    assert np.abs(ours - base).max() > 1e-3
    handle.set_weight(0.0)
    np.testing.assert_allclose(image(pipe, family), base, atol=1e-5)
    handle.set_weight(0.7)
    np.testing.assert_allclose(image(pipe, family), ours, atol=1e-6)
    handle.unload()
    assert _no_adapters(pipe)
    np.testing.assert_allclose(image(pipe, family), base, atol=1e-5)


def test_without_a_pipeline_load_returns_the_verified_adapter(hub: Hub, tmp_path: Path) -> None:
    path = make_adapter("sd1", tmp_path / "a", seed=1)
    _add(hub, path, "style", triggers=["sks"])
    verified = lorahub.load("style@1", hub=hub)
    assert verified.card is not None and verified.card.trigger_words == ("sks",)
    assert verified.report is not None and verified.report.ok
    assert len(verified.adapter.layers) == 32 and verified.content_digest == hub.version("style").content_digest


def test_two_stacked_adapters_and_their_cat_merge_equal_diffusers_stack(hub: Hub, tmp_path: Path) -> None:
    a = make_adapter("sd1", tmp_path / "a", seed=1)
    b = make_adapter("sd1", tmp_path / "b", seed=2, rank=2, alpha=2.0, targets=["to_q", "to_v"])
    _add(hub, a, "ink")
    _add(hub, b, "pixel")
    pipe = tiny("sd1")
    handles = lorahub.stack(pipe, ["ink:0.7", "pixel@1:-0.4"], hub=hub)
    stacked = image(pipe, "sd1")
    np.testing.assert_allclose(stacked, _reference("sd1", [(a, 0.7), (b, -0.4)]), atol=1e-5)
    assert [h.weight for h in handles] == [0.7, -0.4]
    hub.merge(["ink:0.7", "pixel:-0.4"], out="ink-pixel", dtype="fp32")
    merged = tiny("sd1")
    lorahub.load("ink-pixel", merged, hub=hub)
    np.testing.assert_allclose(image(merged, "sd1"), stacked, atol=1e-5)


def test_prompt_syntax_applies_exactly_the_prompts_adapters(hub: Hub, tmp_path: Path) -> None:
    a = make_adapter("sd1", tmp_path / "a", seed=1)
    b = make_adapter("sd1", tmp_path / "b", seed=2)
    _add(hub, a, "ink", triggers=["inky"])
    _add(hub, b, "pixel", triggers=["pixelated", "8-bit"])
    pipe = tiny("sd1")
    applied = lorahub.apply_prompt(pipe, "a cat <lora:ink:0.5>, 8-bit <lora:pixel>", hub=hub)
    assert applied.prompt == "a cat, 8-bit, inky, pixelated"
    np.testing.assert_allclose(image(pipe, "sd1"), _reference("sd1", [(a, 0.5), (b, 1.0)]), atol=1e-5)
    again = lorahub.apply_prompt(pipe, "a cat <lora:pixel:0.3>", hub=hub, triggers=False)
    assert again.prompt == "a cat"
    np.testing.assert_allclose(image(pipe, "sd1"), _reference("sd1", [(b, 0.3)]), atol=1e-5)
    plain = lorahub.apply_prompt(pipe, "a cat", hub=hub)
    np.testing.assert_allclose(image(pipe, "sd1"), image(tiny("sd1"), "sd1"), atol=1e-5)
    assert plain.handles == []


def test_switching_hotswaps_in_place_and_matches_a_fresh_load(hub: Hub, tmp_path: Path) -> None:
    a = make_adapter("sd1", tmp_path / "a", seed=1)
    b = make_adapter("sd1", tmp_path / "b", seed=2, rank=2, alpha=3.0, targets=["to_q", "to_k"])
    _add(hub, a, "ink")
    _add(hub, b, "pixel")
    pipe = tiny("sd1")
    handle = lorahub.load("ink", pipe, hub=hub)  # scale 8/4; pixel's is 3/2: PEFT's hotswap alpha trap
    lorahub.load("pixel", pipe, hub=hub, weight=0.8, replace=handle)
    assert handle.hotswapped
    np.testing.assert_allclose(image(pipe, "sd1"), _reference("sd1", [(b, 0.8)]), atol=1e-5)
    lorahub.load("ink", pipe, hub=hub, replace=handle)  # the injected layers are ink's: swaps back in place
    assert handle.hotswapped
    np.testing.assert_allclose(image(pipe, "sd1"), _reference("sd1", [(a, 1.0)]), atol=1e-5)
    c = make_adapter("sd1", tmp_path / "c", seed=3, text_encoder=True)
    _add(hub, c, "with-te")
    lorahub.load("with-te", pipe, hub=hub, replace=handle)  # UNet swapped in place, text encoder injected
    assert handle.hotswapped and set(handle.targets) == {"unet", "text_encoder"}
    np.testing.assert_allclose(image(pipe, "sd1"), _reference("sd1", [(c, 1.0)]), atol=1e-5)
    e = make_adapter("sd1", tmp_path / "e", seed=5, rank=2, alpha=1.0, text_encoder=True)
    _add(hub, e, "with-te-2")
    lorahub.load("with-te-2", pipe, hub=hub, weight=0.6, replace=handle)  # both components swapped in place
    assert handle.hotswapped
    np.testing.assert_allclose(image(pipe, "sd1"), _reference("sd1", [(e, 0.6)]), atol=1e-5)
    handle.set_weight(1.3)  # set_adapters recomputes every scaling from lora_alpha / r
    np.testing.assert_allclose(image(pipe, "sd1"), _reference("sd1", [(e, 1.3)]), atol=1e-5)
    d = make_adapter("sd1", tmp_path / "d", seed=4, targets=["to_q", "ff.net.2"])
    _add(hub, d, "wider")
    lorahub.load("wider", pipe, hub=hub, replace=handle)  # a module the injected layers lack: a fresh load
    assert not handle.hotswapped and set(handle.targets) == {"unet"}
    np.testing.assert_allclose(image(pipe, "sd1"), _reference("sd1", [(d, 1.0)]), atol=1e-5)


# --- refusals never put a tensor into the pipeline ---------------------------------------------------------------


def test_family_mismatch(hub: Hub, tmp_path: Path) -> None:
    _add(hub, make_adapter("sdxl", tmp_path / "x", seed=1), "xl")
    pipe = tiny("sd1")
    with pytest.raises(errors.FamilyMismatchError, match="sdxl adapter"):
        lorahub.load("xl", pipe, hub=hub)
    assert _no_adapters(pipe)


def test_forbidden_use(hub: Hub, tmp_path: Path) -> None:
    _add(hub, make_adapter("sd1", tmp_path / "a", seed=1), "nc", license="CC-BY-NC-4.0")
    pipe = tiny("sd1")
    with pytest.raises(errors.LicenseForbiddenError):
        lorahub.load("nc", pipe, hub=hub, use="commercial")
    assert _no_adapters(pipe)


def test_untrusted_signer(hub: Hub, tmp_path: Path) -> None:
    other = Hub.open(tmp_path / "other-home")
    other.create_identity("Mallory <m@example.com>")
    other.add(make_adapter("sd1", tmp_path / "a", seed=1), AddOptions(name="gift", license="MIT"))
    exported = tmp_path / "gift.safetensors"
    other.export("gift", exported)
    pipe = tiny("sd1")
    with pytest.raises(errors.VerificationFailedError, match="signer trusted"):
        lorahub.load(exported, pipe, hub=hub)
    assert _no_adapters(pipe)
    hub.trust_add(other.keys.default().public_pem)  # type: ignore[union-attr]
    lorahub.load(exported, pipe, hub=hub)
    assert not _no_adapters(pipe)


def test_tampered_blob_is_caught_even_after_a_cached_verification(hub: Hub, tmp_path: Path) -> None:
    _add(hub, make_adapter("sd1", tmp_path / "a", seed=1), "style")
    pipe = tiny("sd1")
    lorahub.load("style", hub=hub)  # verified once: size, mtime and inode recorded
    blob = hub.blobs.path_for(hub.version("style").blob_sha256)
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[-5] ^= 0x01
    blob.write_bytes(bytes(data))
    with pytest.raises(errors.VerificationFailedError, match="blob integrity"):
        lorahub.load("style", pipe, hub=hub)
    assert _no_adapters(pipe)


def test_a_second_load_is_not_rehashed_but_still_checks_trust(
    hub: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _add(hub, make_adapter("sd1", tmp_path / "a", seed=1), "style")
    lorahub.load("style", hub=hub)
    monkeypatch.setattr(Hub, "verify", lambda *a, **k: pytest.fail("a cached blob was verified from its bytes"))
    assert lorahub.load("style", hub=hub).report.ok
    hub.trust_revoke(hub.keys.default().fingerprint)  # type: ignore[union-attr]
    with pytest.raises(errors.VerificationFailedError, match="signer trusted"):
        lorahub.load("style", hub=hub)


def _narrowed(source: Path, out: Path, dtype: str) -> Path:
    """``source`` with every float32 tensor stored as ``dtype`` (F16 or BF16), as trainers often save."""
    import torch

    from lorahub.files.safetensors import SafetensorsFile, write

    narrow = {"F16": torch.float16, "BF16": torch.bfloat16}[dtype]
    tensors = {}
    with SafetensorsFile(source) as container:
        metadata = dict(container.metadata)
        for name, info in container.header.tensors.items():
            values = torch.from_numpy(container.array(name).copy()).to(narrow)
            tensors[name] = (dtype, info.shape, values.view(torch.int16).numpy().tobytes())
    write(out, tensors, metadata)
    return out


@pytest.mark.parametrize(("stored", "pipe_dtype"), [("F16", "float16"), ("F16", "float32"), ("BF16", "float16")])
def test_injected_factors_are_the_files_values_converted_once(
    hub: Hub, tmp_path: Path, stored: str, pipe_dtype: str
) -> None:
    """A pipeline load reads tensors as stored (``VerifiedAdapter.stored``: no float32 detour): PEFT must hold the
    file's values in the pipeline's dtype, exactly what the widened canonical tensors give."""
    import torch

    from lorahub.adapters.model import read_adapter

    path = _narrowed(make_adapter("sd1", tmp_path / "a", seed=1), tmp_path / "narrow.safetensors", stored)
    _add(hub, path, "narrow")
    dtype = getattr(torch, pipe_dtype)
    pipe = tiny("sd1").to(dtype)
    handle = lorahub.load("narrow", pipe, hub=hub)
    stored_layers = handle.adapter.stored.layers
    assert {str(layer.tensors["down"].dtype) for layer in stored_layers.values()} == {
        "float16" if stored == "F16" else "float32"
    }
    canonical = read_adapter(path)
    assert len(canonical.layers) == len(stored_layers) == sum(len(t) for t in handle.targets.values())
    for name, layer in canonical.layers.items():
        component, _, module_path = name.partition(".")
        module = getattr(pipe, component).get_submodule(module_path)
        for factor, role in ((module.lora_A, "down"), (module.lora_B, "up")):
            held = factor[handle.adapter_name].weight
            assert held.dtype == dtype
            expected = torch.from_numpy(layer.tensors[role]).to(dtype).reshape(held.shape)
            assert torch.equal(held, expected), name


def test_a_lone_adapter_at_weight_one_applies_without_set_adapters(hub: Hub, tmp_path: Path) -> None:
    """After injecting the only adapter at weight 1, ``set_adapters`` is skipped (PEFT left it active at its own
    scale): the image must still be diffusers', on fresh layers and on layers an earlier adapter left wrapped, and a
    second adapter must switch the first one's weight handling back on."""
    a = make_adapter("sd1", tmp_path / "a", seed=1)
    b = make_adapter("sd1", tmp_path / "b", seed=2)
    _add(hub, a, "ink")
    _add(hub, b, "pixel")
    pipe = tiny("sd1")
    for _ in range(2):  # the second time, PEFT's layers from the first load are still in place
        handle = lorahub.load("ink", pipe, hub=hub)
        np.testing.assert_allclose(image(pipe, "sd1"), _reference("sd1", [(a, 1.0)]), atol=1e-5)
        handle.unload()
    first = lorahub.load("ink", pipe, hub=hub)
    lorahub.load("pixel", pipe, hub=hub, weight=0.5)
    np.testing.assert_allclose(image(pipe, "sd1"), _reference("sd1", [(a, 1.0), (b, 0.5)]), atol=1e-5)
    first.unload()


def test_enable_lora_hotswap_pads_the_first_unet_adapter(hub: Hub, tmp_path: Path) -> None:
    """``enable_lora_hotswap`` before lorahub's first load: the preparation it asks for runs after that adapter's
    injection (its layers padded to the target rank) and the image is still diffusers'."""
    from peft.tuners.lora import LoraLayer

    path = make_adapter("sd1", tmp_path / "a", seed=1, text_encoder=False)
    _add(hub, path, "ink")
    pipe = tiny("sd1")
    pipe.enable_lora_hotswap(target_rank=8)
    lorahub.load("ink", pipe, hub=hub)
    assert pipe.unet._prepare_lora_hotswap_kwargs is None
    layers = [m for m in pipe.unet.modules() if isinstance(m, LoraLayer)]
    assert layers and {m.lora_A[name].weight.shape[0] for m in layers for name in m.lora_A} == {8}
    np.testing.assert_allclose(image(pipe, "sd1"), _reference("sd1", [(path, 1.0)]), atol=1e-5)

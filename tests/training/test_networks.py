"""LoKr, LoHa and DoRA training, text-encoder LoRA and EMA, on the tiny pipelines: each written file loads through
lorahub and gives the pipeline exactly what PEFT's trained model computed."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import lorahub
from lorahub import Hub
from lorahub.files.safetensors import read_header
from lorahub.training import networks
from lorahub.training.config import TrainConfig
from tests.training.conftest import TRAINER, write_squares

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

FAST = {"resolution": 64, "batch": 1, "log_every": 1}


def _state(hub: Hub, training: dict[str, Any], prefix: str = "lora.") -> dict[str, Any]:
    from safetensors.torch import load_file

    tensors = load_file(str(hub.settings.home / training["state"] / "state.safetensors"))
    return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}


def _unet_output(unet: Any, seed: int = 3) -> Any:
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn((1, unet.config.in_channels, 8, 8), generator=generator)
    text = torch.randn((1, 6, unet.config.cross_attention_dim), generator=generator)
    with torch.no_grad():
        return unet(sample, torch.tensor([500]), encoder_hidden_states=text).sample


@pytest.mark.parametrize(
    "case", [("lokr", 4, "lokr_w2"), ("lokr", 2, "lokr_w2_b"), ("loha", 4, "hada_w2_b"), ("dora", 4, "dora_scale")]
)
def test_network_trains_and_loads_exactly(
    case: tuple[str, int, str], hub: Hub, tiny_bases: Mapping[str, Path], tmp_path: Path
) -> None:
    """rank 4 on 32 features is a LoKr of two whole factors (its scale folded into w1), rank 2 a decomposed w2."""
    network, rank, tensor = case
    base = tiny_bases["sd1"]
    targets = ["to_q", "to_v", "proj_in", "conv1"]
    result = lorahub.train(
        base, write_squares(tmp_path / "data", 2), name=network, hub=hub, steps=2, lr=1e-2, network=network,
        rank=rank, alpha=3.0, targets=targets, **FAST,
    )  # fmt: skip
    losses = [float(point[1]) for point in result.training["loss_curve"]["points"]]
    assert len(losses) == 2 and all(0 < loss < 10 for loss in losses)
    hyper = result.training["hyperparameters"]
    assert hyper["network"] == network and hyper["rank"] == rank
    header = read_header(hub.blobs.path_for(hub.version(network).blob_sha256))
    assert any(key.endswith(f".{tensor}") for key in header.tensors)
    assert header.metadata["ss_network_module"] == ("lycoris.kohya")
    assert lorahub.inspect(hub.blobs.path_for(hub.version(network).blob_sha256)).format == "lycoris"

    # PEFT's trained model: the base UNet with the run's tuner and its trained weights (the checkpoint's state)
    trained = _state(hub, result.training)
    reference = diffusers.UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    config = TrainConfig(network=network, rank=rank, alpha=3.0)  # type: ignore[arg-type]
    networks.add_adapter(reference, networks.tuner_config(config, tuple(targets)), network)
    initial = networks.adapter_state(reference)
    assert any(not torch.equal(initial[k], trained[k]) for k in trained)  # training changed the adapter
    networks.load_state(reference, trained, "denoiser")
    expected = _unet_output(reference)

    pipe = diffusers.DiffusionPipeline.from_pretrained(base, safety_checker=None)
    before = _unet_output(pipe.unet)
    lorahub.load(network, pipe, hub=hub)
    after = _unet_output(pipe.unet)
    assert (expected - before).abs().max() > 1e-4  # the adapter does something…
    torch.testing.assert_close(after, expected, rtol=1e-5, atol=1e-6)  # …and lorahub applies exactly that


def _clip_output(pipe: Any, name: str) -> Any:
    tokenizer = pipe.tokenizer if name == "text_encoder" else pipe.tokenizer_2
    ids = tokenizer(["sks, square"], padding="max_length", max_length=16, truncation=True, return_tensors="pt")
    with torch.no_grad():
        return getattr(pipe, name)(ids.input_ids)[0]


@pytest.mark.parametrize("family", ["sd1", "sdxl", "flux1"])
def test_text_encoder_lora_changes_the_text_encoder(
    family: str, hub: Hub, tiny_bases: Mapping[str, Path], tmp_path: Path
) -> None:
    result = lorahub.train(
        tiny_bases[family], write_squares(tmp_path / "data", 2), name="te", hub=hub, steps=2, lr=1e-3,
        train_text_encoder=True, text_encoder_lr=5e-2, **FAST,
    )  # fmt: skip
    encoders = {"sd1": ["text_encoder"], "sdxl": ["text_encoder", "text_encoder_2"], "flux1": ["text_encoder"]}[family]
    hyper = result.training["hyperparameters"]
    assert hyper["train_text_encoder"] is True and hyper["text_encoder_lr"] == "0.05"
    assert hyper["text_encoders"] == encoders
    header = read_header(hub.blobs.path_for(hub.version("te").blob_sha256))
    prefixes = {
        "sd1": ("lora_unet_", "lora_te_text_model_"),
        "sdxl": ("lora_unet_", "lora_te1_text_model_", "lora_te2_text_model_"),
        "flux1": ("transformer.", "text_encoder.text_model."),
    }[family]
    assert {next(p for p in prefixes if key.startswith(p)) for key in header.tensors} == set(prefixes)
    if family != "flux1":
        assert header.metadata["ss_network_train_unet_only"] == "False"
        assert header.metadata["ss_text_encoder_lr"] == "0.05"

    pipe = diffusers.DiffusionPipeline.from_pretrained(tiny_bases[family])
    before = {name: _clip_output(pipe, name) for name in encoders}
    lorahub.load("te", pipe, hub=hub)
    for name in encoders:
        assert (_clip_output(pipe, name) - before[name]).abs().max() > 1e-4, name
    denoiser = pipe.transformer if family == "flux1" else pipe.unet
    assert any("lora_" in name for name, _ in denoiser.named_parameters())  # the denoiser's part loaded too


def test_text_encoder_lora_loads_exactly(hub: Hub, tiny_bases: Mapping[str, Path], tmp_path: Path) -> None:
    """The CLIP output with the loaded adapter is PEFT's trained encoder's (SD1: kohya ``lora_te_`` names)."""
    base = tiny_bases["sd1"]
    result = lorahub.train(
        base, write_squares(tmp_path / "data", 2), name="te", hub=hub, steps=2, train_text_encoder=True,
        text_encoder_lr=5e-2, **FAST,
    )  # fmt: skip
    reference = diffusers.DiffusionPipeline.from_pretrained(base, safety_checker=None)
    networks.add_adapter(reference.text_encoder, networks.text_encoder_config(TrainConfig()), "lora", "te")
    networks.load_state(reference.text_encoder, _state(hub, result.training, "te.text_encoder."), "text_encoder")
    pipe = diffusers.DiffusionPipeline.from_pretrained(base, safety_checker=None)
    lorahub.load("te", pipe, hub=hub)
    torch.testing.assert_close(
        _clip_output(pipe, "text_encoder"), _clip_output(reference, "text_encoder"), rtol=1e-5, atol=1e-6
    )


def test_ema_is_saved_and_resumes_exactly(tiny_bases: Mapping[str, Path], tmp_path: Path) -> None:
    """The file holds the moving average (not the trained weights); a resumed run continues the same average."""
    data = write_squares(tmp_path / "data", 3)
    settings = {"lr": 1e-2, "ema_decay": 0.9, "train_text_encoder": True, **FAST}
    straight = Hub.open(tmp_path / "straight")
    straight.create_identity(TRAINER)
    whole = lorahub.train(tiny_bases["sd1"], data, name="run", hub=straight, steps=4, **settings)
    split = Hub.open(tmp_path / "split")
    split.create_identity(TRAINER)
    lorahub.train(tiny_bases["sd1"], data, name="run", hub=split, steps=2, **settings)
    resumed = lorahub.train(tiny_bases["sd1"], data, hub=split, resume="run@1", steps=4)
    assert resumed.final.content_digest == whole.final.content_digest
    assert whole.training["hyperparameters"]["ema_decay"] == "0.9"

    from safetensors.torch import load_file

    written = load_file(str(straight.blobs.path_for(straight.version("run").blob_sha256)))
    live = _state(straight, whole.training)
    key = next(k for k in live if k.endswith("lora_B.weight"))
    kohya = "lora_unet_" + key.removesuffix(".lora_B.weight").replace(".", "_") + ".lora_up.weight"
    assert not torch.allclose(written[kohya], live[key])  # the average, not the last weights


def test_network_settings_round_trip_through_the_card() -> None:
    from lorahub import errors

    config = TrainConfig(
        alpha=2.0,
        network="lokr",
        lokr_factor=4,
        train_text_encoder=True,
        text_encoder_lr=5e-5,
        ema_decay=0.999,
        processes=2,
    ).check()  # alpha given: the card records the effective alpha, so a default None would come back as the rank
    assert TrainConfig.from_card_dict(config.card_dict()) == config
    default = TrainConfig(alpha=4.0)
    assert TrainConfig.from_card_dict(default.card_dict()) == default
    assert config.card_dict()["text_encoder_lr"] == "5e-05" and config.effective_batch == 2
    for bad in ({"network": "oft"}, {"lokr_factor": 0}, {"ema_decay": 1.0}, {"processes": 0}, {"text_encoder_lr": 0.0}):
        with pytest.raises(errors.TrainingError, match=next(iter(bad))):
            TrainConfig(**bad).check()  # type: ignore[arg-type]

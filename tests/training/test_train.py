"""lorahub.train on tiny SD1 and SDXL pipelines, for real: lineage, consent, checkpoints, resume, loading."""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import lorahub
from lorahub import Hub, errors
from lorahub.dev.example_dataset import write_example_dataset
from lorahub.dev.tiny_pipeline import CALL_KWARGS
from lorahub.files.safetensors import read_header
from lorahub.sdk.training import training_runs
from lorahub.training.base import describe_base
from lorahub.training.config import TrainConfig
from lorahub.training.data import read_dataset
from lorahub.training.loop import Trainer
from tests.training.conftest import TRAINER, write_squares

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

FAST = {"resolution": 64, "batch": 1, "log_every": 2}

TRAINING_FIELDS = {
    "schema", "run_id", "final", "trainer", "base_model", "objective", "dataset", "prior", "hyperparameters", "seed",
    "precision", "steps", "software", "hardware", "started_at", "finished_at", "loss_curve", "resumed_from",
    "output", "state", "notes", "consent_manifest", "samples",
}  # fmt: skip


def _card(hub: Hub, ref: str) -> Any:
    return hub.signed_card(hub.version(ref)).card


def _state_lora(hub: Hub, training: dict[str, Any]) -> dict[str, Any]:
    from safetensors.torch import load_file

    tensors = load_file(str(hub.settings.home / training["state"] / "state.safetensors"))
    return {k.removeprefix("lora."): v for k, v in tensors.items() if k.startswith("lora.")}


def test_card_records_the_whole_lineage(hub: Hub, tiny_bases: Mapping[str, Path], tmp_path: Path) -> None:
    sources = write_example_dataset(tmp_path / "data")
    steps: list[int] = []
    result = lorahub.train(
        tiny_bases["sd1"], tmp_path / "data", name="tiny-style", trigger="sks", sources=sources, hub=hub,
        steps=4, save_every=2, on_step=lambda s: steps.append(s.step), **FAST,
    )  # fmt: skip
    assert steps == [1, 2, 3, 4]
    assert [f"{v.name}@{v.version}" for v in result.versions] == ["tiny-style@1", "tiny-style@2"]
    card = _card(hub, "tiny-style@2")
    training = card.training
    assert set(training) == TRAINING_FIELDS
    assert training["final"] is True and _card(hub, "tiny-style@1").training["final"] is False
    assert training["steps"] == {"done": 4, "total": 4}
    assert training["base_model"]["weights_digest"] == card.base_model.weights_digest
    assert training["base_model"]["family"] == "sd1" == card.base_model.family
    assert training["objective"] == "epsilon"
    assert training["trainer"]["identity"]["fingerprint"] == hub.signer().keyid
    assert {"torch", "diffusers", "peft", "lorahub"} <= set(training["software"])
    assert training["hardware"]["device"] == "cpu"
    hyper = training["hyperparameters"]
    assert hyper["lr"] == "0.0001" and hyper["rank"] == 4 and hyper["targets"] == ["to_q", "to_k", "to_v", "to_out.0"]
    assert training["seed"] == 0 and training["precision"] == {"requested": "bf16", "used": "no"}
    assert any("fp32" in note for note in training["notes"])  # the CPU fallback is said, not silent
    assert [p[0] for p in training["loss_curve"]["points"]] == [2, 4]
    # the opted-out image is excluded and recorded, and the pinned manifest is the one trained on
    dataset = training["dataset"]
    assert dataset["images"] == 3 and [e["path"] for e in dataset["excluded"]] == ["img-3.png"]
    assert card.consent.manifest_digest == dataset["manifest_digest"] == training["consent_manifest"]["digest"]
    assert card.consent.status == "mixed" and card.trigger_words == ("sks",)
    # the file carries kohya's and SAI's keys, and the audit log says "train"
    header = read_header(hub.blobs.path_for(hub.version("tiny-style@2").blob_sha256))
    metadata = header.metadata
    assert metadata["ss_network_dim"] == "4" and metadata["ss_num_train_images"] == "3"
    assert metadata["ss_new_sd_model_hash"] == card.base_model.weights_digest
    assert metadata["ss_session_id"] == result.run_id and metadata["ss_steps"] == "4"
    assert metadata["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert metadata["modelspec.trigger_phrase"] == "sks"
    assert all(name.startswith("lora_unet_") for name in header.tensors)
    events = [e for e in hub.audit(adapter="tiny-style") if e["action"] == "train"]
    assert [e["details"]["step"] for e in events] == [2, 4]
    assert lorahub.Hub.verify(hub, "tiny-style@2").ok
    [row] = training_runs(hub).list("tiny-style")
    assert (row.run_id, row.status, row.steps_done, row.steps_total) == (result.run_id, "finished", 4, 4)
    assert (row.latest_version, row.latest_digest) == (2, result.final.content_digest)
    assert row.trainer == hub.signer().keyid and row.config["rank"] == 4


def test_policy_can_refuse_unknown_consent(hub: Hub, tiny_bases: Mapping[str, Path], tmp_path: Path) -> None:
    data = write_squares(tmp_path / "data", 2)  # no sources file: every image's consent is unknown
    hub.settings.policy_path.write_text("require_known_consent = true\n")
    with pytest.raises(errors.ConsentRefusedError, match="requires known consent, and 2 image"):
        lorahub.train(tiny_bases["sd1"], data, name="refused", hub=hub, steps=1, **FAST)
    assert hub.list_versions() == []


def test_resume_continues_the_same_run(tiny_bases: Mapping[str, Path], tmp_path: Path) -> None:
    """Two steps, then two more from the checkpoint, give the very weights of four uninterrupted steps."""
    data = write_squares(tmp_path / "data", 3)
    straight = Hub.open(tmp_path / "straight")
    straight.create_identity(TRAINER)
    whole = lorahub.train(tiny_bases["sd1"], data, name="run", hub=straight, steps=4, lr=1e-3, **FAST)

    split = Hub.open(tmp_path / "split")
    split.create_identity(TRAINER)
    first = lorahub.train(tiny_bases["sd1"], data, name="run", hub=split, steps=2, lr=1e-3, **FAST)
    resumed = lorahub.train(tiny_bases["sd1"], data, hub=split, resume="run@1", steps=4)

    assert resumed.run_id == first.run_id and resumed.final.version == 2
    assert resumed.final.content_digest == whole.final.content_digest
    card = _card(split, "run@2")
    assert [(p.relation, p.digest) for p in card.lineage] == [("resumed-from", first.final.content_digest)]
    assert card.training["resumed_from"]["step"] == 2
    assert card.training["hyperparameters"]["lr"] == "0.001"  # the run's own settings, not the defaults
    assert [p[0] for p in card.training["loss_curve"]["points"]] == [2, 4]
    assert card.training["started_at"] == first.training["started_at"]
    [row] = training_runs(split).list()
    assert (row.run_id, row.status, row.steps_done, row.latest_version) == (first.run_id, "finished", 4, 2)
    with pytest.raises(errors.TrainingError, match="nothing to train"):
        lorahub.train(tiny_bases["sd1"], data, hub=split, resume="run@2")
    # from the state folder instead of the ref: the same two steps again give the same, already catalogued weights
    state = split.settings.home / first.training["state"]
    again = lorahub.train(tiny_bases["sd1"], data, hub=split, resume=state, steps=4)
    assert again.final.already and again.final.content_digest == whole.final.content_digest
    with pytest.raises(errors.TrainingError, match=r"keeps its settings.*rank"):
        lorahub.train(tiny_bases["sd1"], data, hub=split, resume="run@1", steps=4, rank=8)


@pytest.mark.parametrize("family", ["sd1", "sdxl", "flux1"])
def test_result_loads_into_the_pipeline_and_changes_it(
    family: str, hub: Hub, tiny_bases: Mapping[str, Path], tmp_path: Path
) -> None:
    data = write_squares(tmp_path / "data", 2)
    result = lorahub.train(tiny_bases[family], data, name="look", trigger="sks", hub=hub, steps=3, lr=1e-2, **FAST)
    exported = hub.export("look", tmp_path / "look.safetensors")
    assert exported.family == family
    assert result.training["objective"] == ("flow" if family == "flux1" else "epsilon")

    pipe = diffusers.DiffusionPipeline.from_pretrained(tiny_bases[family])
    extra = CALL_KWARGS[family]  # type: ignore[index]  # the parametrized str is a Family

    def generate() -> Any:
        generator = torch.Generator().manual_seed(0)
        return pipe("sks, square", num_inference_steps=2, height=64, width=64, output_type="np", generator=generator,
                    **extra).images  # fmt: skip

    before = generate()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # peft warns when config and weights disagree
        pipe.load_lora_weights(str(tmp_path / "look.safetensors"), adapter_name="look")
    after = generate()
    assert abs(after - before).max() > 1e-3
    # every trained module arrived with its weights and its scale (alpha / rank)
    trained = _state_lora(hub, result.training)
    denoiser = pipe.transformer if family == "flux1" else pipe.unet
    loaded = {
        name.replace(".look.", "."): param.detach()
        for name, param in denoiser.named_parameters()
        if ".lora_" in name and ".look." in name
    }
    assert set(loaded) == set(trained)
    assert all(torch.equal(loaded[k], trained[k]) for k in trained)


def test_validation_loss_drops_quickly(tiny_bases: Mapping[str, Path], tmp_path: Path) -> None:
    """A short run (the slow test below does 150 steps on both families)."""
    _validation(tiny_bases["sd1"], tmp_path, steps=40)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_validation_loss_drops(family: str, tiny_bases: Mapping[str, Path], tmp_path: Path) -> None:
    _validation(tiny_bases[family], tmp_path, steps=150)


def _validation(base: Path, tmp_path: Path, *, steps: int) -> None:
    """Held-out images, fixed noise and timesteps: the loss they give must fall as the LoRA learns."""
    examples = read_dataset(write_squares(tmp_path / "data", 8)).examples
    config = TrainConfig(rank=4, steps=steps, lr=1e-2, batch=4, resolution=64, cache_latents=True, seed=0)
    trainer = Trainer(describe_base(base), config, examples[:6], held_out=examples[6:])
    before = trainer.evaluate()
    trainer.train(steps)
    after = trainer.evaluate()
    assert after < 0.9 * before, (before, after)
    assert trainer.evaluate() == after  # fixed noise: the measure itself is deterministic


def test_bad_settings_are_refused_before_training(hub: Hub, tiny_bases: Mapping[str, Path], tmp_path: Path) -> None:
    data = write_squares(tmp_path / "data", 1)
    with pytest.raises(errors.TrainingError, match="resolution = 60"):
        lorahub.train(tiny_bases["sd1"], data, hub=hub, resolution=60)
    with pytest.raises(errors.TrainingError, match="unknown training setting"):
        lorahub.train(tiny_bases["sd1"], data, hub=hub, learning_rate=1.0)
    with pytest.raises(errors.TrainingError, match="not a diffusers pipeline folder"):
        lorahub.train(tmp_path, data, hub=hub)
    with pytest.raises(errors.TrainingError, match="cannot put a LoRA on nope"):
        lorahub.train(tiny_bases["sd1"], data, name="broken", hub=hub, targets=["nope"], steps=1, **FAST)
    assert [(r.name, r.status) for r in training_runs(hub).list()] == [("broken", "failed")]


def test_prior_preservation_images_are_trained_on_and_recorded(
    hub: Hub, tiny_bases: Mapping[str, Path], tmp_path: Path
) -> None:
    data = write_squares(tmp_path / "data", 2)
    prior = write_squares(tmp_path / "prior", 3, caption="a square")
    result = lorahub.train(
        tiny_bases["sd1"], data, prior=prior, name="kept", trigger="sks", hub=hub, steps=2, prior_weight=0.5, **FAST
    )
    training = result.training
    assert training["prior"]["images"] == 3 and training["hyperparameters"]["prior_weight"] == "0.5"
    manifest = json.loads((hub.settings.home / training["consent_manifest"]["path"]).read_text())
    assert [item["path"] for item in manifest["items"]] == [
        "prior/sq-0.png", "prior/sq-1.png", "prior/sq-2.png", "sq-0.png", "sq-1.png",
    ]  # fmt: skip
    header = read_header(hub.blobs.path_for(hub.version("kept").blob_sha256))
    assert header.metadata["ss_num_reg_images"] == "3" and header.metadata["ss_prior_loss_weight"] == "0.5"


def test_v_prediction_bases_train_on_velocity(hub: Hub, tiny_bases: Mapping[str, Path], tmp_path: Path) -> None:
    base = tmp_path / "v-base"
    shutil.copytree(tiny_bases["sd1"], base)
    config_path = base / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps(config | {"prediction_type": "v_prediction"}))
    result = lorahub.train(base, write_squares(tmp_path / "data", 1), name="vee", hub=hub, steps=1, **FAST)
    assert result.training["objective"] == "v_prediction"
    header = read_header(hub.blobs.path_for(hub.version("vee").blob_sha256))
    assert header.metadata["modelspec.prediction_type"] == "v"
    assert header.metadata["ss_base_model_version"] == "sd_v1_v"


def test_the_other_knobs_train_and_are_recorded(hub: Hub, tiny_bases: Mapping[str, Path], tmp_path: Path) -> None:
    """Gradient accumulation, cosine schedule with warm-up, gradient checkpointing, cached latents, other targets."""
    lrs: list[float] = []
    result = lorahub.train(
        tiny_bases["sd1"], write_squares(tmp_path / "data", 2), name="knobs", hub=hub, steps=3, grad_accum=2,
        scheduler="cosine", warmup=1, gradient_checkpointing=True, cache_latents=True, targets=["to_q", "proj_in"],
        rank=2, alpha=1.0, seed=7, lr=1e-3, on_step=lambda s: lrs.append(s.lr), **FAST,
    )  # fmt: skip
    assert lrs[0] == pytest.approx(1e-3) and lrs[1] < lrs[0]  # warm-up reached the peak, then the cosine decays
    hyper = result.training["hyperparameters"]
    assert (hyper["grad_accum"], hyper["scheduler"], hyper["warmup"], hyper["seed"]) == (2, "cosine", 1, 7)
    assert hyper["gradient_checkpointing"] is True and hyper["cache_latents"] is True
    assert hyper["targets"] == ["to_q", "proj_in"] and hyper["alpha"] == "1.0"
    header = read_header(hub.blobs.path_for(hub.version("knobs").blob_sha256))
    assert any(".proj_in." not in k and "proj_in" in k for k in header.tensors)
    assert header.metadata["ss_network_alpha"] == "1.0" and header.metadata["ss_total_batch_size"] == "2"
    # alpha travels in the file: diffusers applies alpha / rank = 0.5 to every module, conv proj_in included
    hub.export("knobs", tmp_path / "knobs.safetensors")
    pipe = diffusers.DiffusionPipeline.from_pretrained(tiny_bases["sd1"])
    pipe.load_lora_weights(str(tmp_path / "knobs.safetensors"), adapter_name="knobs")
    scales = {m.scaling["knobs"] for m in pipe.unet.modules() if hasattr(m, "scaling") and "knobs" in m.scaling}
    assert scales == {0.5}

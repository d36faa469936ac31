"""Samples during training on tiny pipelines, for real: rendered with the adapter at each step, signed with C2PA
credentials naming the base and the checkpoint, listed in the run's row and by ``show``; deterministic."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import lorahub
from lorahub import Hub, errors
from lorahub.sdk.training import training_runs
from lorahub.training.config import TrainConfig
from lorahub.training.samples import SamplePrompt, parse_prompt, parse_prompts, read_prompt_file
from tests.cli.test_catalog_cli import Home
from tests.training.conftest import TRAINER, write_squares

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("c2pa")

FAST = {"resolution": 64, "batch": 1, "log_every": 2}
PROMPTS = ("sks square, red --s 2 --d 7", "sks square --n blurry --s 2 --l 5.5 --w 32 --h 48")


def _pixels(path: Path) -> bytes:
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB").tobytes()


def test_kohya_prompt_lines_are_parsed_and_bad_ones_refused() -> None:
    assert parse_prompt("a cat --n ugly, blurry --s 12 --l 7.5 --d 3 --w 512 --h 768", resolution=64) == SamplePrompt(
        "a cat", negative="ugly, blurry", steps=12, guidance=7.5, seed=3, width=512, height=768
    )
    assert parse_prompts(["# a comment", "", "  a dog  "], resolution=64) == (SamplePrompt("a dog"),)
    for line, message in [
        ("a cat --ss euler_a", "unknown option --ss"),
        ("a cat --s many", "--s 'many' is not a int"),
        ("a cat --w 50", "width 50 is not a multiple of 16"),
        (" --s 3", "no prompt"),
        ("a cat --s 0", "out of range"),
    ]:
        with pytest.raises(errors.TrainingError, match=message):
            parse_prompt(line, resolution=64)
    with pytest.raises(errors.TrainingError, match="no sample prompts"):
        TrainConfig(sample_every=2).check()
    with pytest.raises(errors.TrainingError, match="unknown option"):
        TrainConfig(sample_prompts=("a cat --x 1",)).check()


def test_prompt_files_and_the_settings_round_trip_through_the_card(tmp_path: Path) -> None:
    path = tmp_path / "prompts.txt"
    path.write_text("# samples\nsks square --s 2\n\nsks circle --d 4\n", encoding="utf-8")
    assert read_prompt_file(path) == ("sks square --s 2", "sks circle --d 4")
    (tmp_path / "empty.txt").write_text("# nothing\n", encoding="utf-8")
    with pytest.raises(errors.TrainingError, match="holds no prompts"):
        read_prompt_file(tmp_path / "empty.txt")
    config = TrainConfig(alpha=4.0, sample_prompts=read_prompt_file(path), sample_every=5, quantization="nf4").check()
    card = config.card_dict()
    assert card["sample_prompts"] == ["sks square --s 2", "sks circle --d 4"]
    assert (card["sample_every"], card["quantization"]) == (5, "nf4")
    assert TrainConfig.from_card_dict(card) == config
    assert TrainConfig().card_dict()["quantization"] is None


def test_samples_are_signed_recorded_and_shown(hub: Hub, tiny_bases: Mapping[str, Path], tmp_path: Path) -> None:
    data = write_squares(tmp_path / "data", 2)
    result = lorahub.train(
        tiny_bases["sd1"], data, name="sampled", hub=hub, steps=4, save_every=2, sample_every=2,
        sample_prompts=PROMPTS, cache_latents=True, **FAST,
    )  # fmt: skip
    assert [(s["step"], s["index"], s["adapter"]) for s in result.samples] == [
        (2, 0, "sampled@1"), (2, 1, "sampled@1"), (4, 0, "sampled@2"), (4, 1, "sampled@2"),
    ]  # fmt: skip
    home = hub.settings.home
    run_dir = home / "training" / result.run_id / "samples"
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "step-000002-00.png", "step-000002-01.png", "step-000004-00.png", "step-000004-01.png",
    ]  # fmt: skip
    card = hub.signed_card(hub.version("sampled@2")).card
    for sample in result.samples:
        report = hub.inspect_image(home / sample["path"])
        assert report.state == "Trusted", report.codes
        assert report.base is not None and report.base["digest"] == card.base_model.weights_digest
        [adapter] = report.adapters
        assert (adapter.name, adapter.version, adapter.catalog_ref) == (
            "sampled",
            sample["step"] // 2,
            sample["adapter"],
        )
        assert adapter.content_digest == hub.version(sample["adapter"]).content_digest
        assert report.parameters["training_run"] == result.run_id
        assert report.parameters["training_step"] == sample["step"]
        assert report.parameters["prompt"] == PROMPTS[sample["index"]].split(" --")[0]
    assert hub.inspect_image(home / result.samples[0]["path"]).parameters["guidance_scale"] == 7.5  # SD's default
    second = hub.inspect_image(home / result.samples[1]["path"])
    assert second.parameters["negative_prompt"] == "blurry" and second.parameters["guidance_scale"] == 5.5
    assert (second.parameters["width"], second.parameters["height"], second.parameters["seed"]) == (32, 48, 1)
    # the adapter changed between the steps: the same prompt and seed give another image
    assert _pixels(home / result.samples[0]["path"]) != _pixels(home / result.samples[2]["path"])

    [row] = training_runs(hub).list("sampled")
    assert [s["sha256"] for s in row.samples] == [s["sha256"] for s in result.samples]
    training = card.training
    assert training["samples"] == {"dir": f"training/{result.run_id}/samples", "every": 2, "prompts": 2}
    assert training["hyperparameters"]["sample_prompts"] == list(PROMPTS)
    shown = hub.show("sampled@1")["samples"]
    assert [(s["step"], s["prompt"]) for s in shown] == [(2, "sks square, red"), (2, "sks square")]
    assert shown[0]["path"] == str(home / result.samples[0]["path"])
    assert len(hub.show("sampled@2")["samples"]) == 4


def test_samples_are_deterministic_and_name_the_weights_of_an_uncatalogued_step(
    tiny_bases: Mapping[str, Path], tmp_path: Path
) -> None:
    """Without a checkpoint at step 2, its samples name the adapter by the content digest those weights get when
    catalogued (here by a run that does checkpoint there), and the images equal that run's, pixel for pixel; the
    weights trained are those of a run without samples."""
    data = write_squares(tmp_path / "data", 2)
    sampling: dict[str, Any] = {"sample_every": 2, "sample_prompts": PROMPTS[:1]}
    runs = {}
    for label, save_every, options in (("a", 2, sampling), ("b", 0, sampling), ("unsampled", 0, {})):
        hub = Hub.open(tmp_path / label)
        hub.create_identity(TRAINER)
        runs[label] = (hub, lorahub.train(
            tiny_bases["sd1"], data, name="det", hub=hub, steps=4, save_every=save_every, **options, **FAST,
        ))  # fmt: skip
    (hub_a, a), (hub_b, b), (_, unsampled) = runs["a"], runs["b"], runs["unsampled"]
    assert [v.version for v in b.versions] == [1]
    assert b.samples[0]["adapter"] is None and b.samples[0]["content_digest"] == a.versions[0].content_digest
    report = hub_b.inspect_image(hub_b.settings.home / b.samples[0]["path"])
    [adapter] = report.adapters
    assert report.valid and adapter.version is None and adapter.known is False
    assert report.parameters["training_step"] == 2
    for first, second in zip(a.samples, b.samples, strict=True):
        assert _pixels(hub_a.settings.home / first["path"]) == _pixels(hub_b.settings.home / second["path"])
    assert unsampled.samples == ()  # and sampling did not change what was trained:
    assert b.final.content_digest == a.final.content_digest == unsampled.final.content_digest


def test_a_resumed_run_keeps_its_samples_and_may_change_how_often(
    hub: Hub, tiny_bases: Mapping[str, Path], tmp_path: Path
) -> None:
    data = write_squares(tmp_path / "data", 2)
    first = lorahub.train(
        tiny_bases["sd1"], data, name="resumed", hub=hub, steps=2, sample_every=1, sample_prompts=PROMPTS[:1], **FAST
    )
    resumed = lorahub.train(tiny_bases["sd1"], data, hub=hub, resume="resumed@1", steps=4, sample_every=2)
    assert [s["step"] for s in first.samples] == [1, 2] and [s["step"] for s in resumed.samples] == [4]
    assert resumed.samples[0]["prompt"] == "sks square, red"  # the run's own prompts, read back from the checkpoint
    [row] = training_runs(hub).list("resumed")
    assert [s["step"] for s in row.samples] == [1, 2, 4]
    assert [s["step"] for s in hub.show("resumed@2")["samples"]] == [1, 2, 4]
    assert [s["step"] for s in hub.show("resumed@1")["samples"]] == [1, 2]


@pytest.mark.parametrize("family", ["sdxl", "flux1"])
def test_sdxl_and_flux_runs_sample_too(family: str, hub: Hub, tiny_bases: Mapping[str, Path], tmp_path: Path) -> None:
    data = write_squares(tmp_path / "data", 1)
    result = lorahub.train(
        tiny_bases[family], data, name=f"{family}-sampled", hub=hub, steps=1, cache_latents=True,
        sample_prompts=["sks square --s 2 --n dull"], **FAST,
    )  # fmt: skip
    [sample] = result.samples
    report = hub.inspect_image(sample["path"])
    assert report.trusted and report.base is not None and report.base["family"] == family
    assert [a.catalog_ref for a in report.adapters] == [f"{family}-sampled@1"]
    assert any("ignore --n" in note for note in result.notes) == (family == "flux1")


def test_the_cli_samples_and_show_lists_them(tiny_bases: Mapping[str, Path], tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    Hub.open(home.root).create_identity(TRAINER)
    data = write_squares(tmp_path / "data", 2)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# one prompt\nsks square --s 2\n", encoding="utf-8")
    trained = home.run(
        "train", "--base", str(tiny_bases["sd1"]), "--data", str(data), "--name", "cli-sampled", "--steps", "2",
        "--resolution", "64", "--sample-prompts", str(prompts), "--sample-every", "1",
    )  # fmt: skip
    assert "sample step 1: sks square" in trained.stdout and "sample step 2: sks square" in trained.stdout
    lines = [line for line in home.run("show", "cli-sampled@1").stdout.splitlines() if line.startswith("sample")]
    assert len(lines) == 2 and "step 1" in lines[0] and "sks square" in lines[0] and "step-000001-00.png" in lines[0]


def test_quantization_is_refused_with_a_hint_when_it_cannot_run(
    hub: Hub, tiny_bases: Mapping[str, Path], tmp_path: Path
) -> None:
    data = write_squares(tmp_path / "data", 1)
    with pytest.raises(errors.TrainingError, match=r"applies to FLUX\.1 transformers"):
        lorahub.train(tiny_bases["sd1"], data, name="q", hub=hub, steps=1, quantization="nf4", **FAST)
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        with pytest.raises(errors.MissingExtraError, match="nf4-quantised FLUX") as caught:
            lorahub.train(tiny_bases["flux1"], data, name="q", hub=hub, steps=1, quantization="nf4", **FAST)
        assert caught.value.hint == "pip install 'lorahub[quantize-nf4]'"
    else:
        if not torch.cuda.is_available():
            with pytest.raises(errors.TrainingError, match="needs a CUDA GPU") as refused:
                lorahub.train(tiny_bases["flux1"], data, name="q", hub=hub, steps=1, quantization="nf4", **FAST)
            assert "--quantize int8" in (refused.value.hint or "")  # torchao's int8 runs on any device
    assert hub.list_versions() == []
    with pytest.raises(errors.TrainingError, match="quantization = 'int4'"):
        lorahub.train(tiny_bases["flux1"], data, name="q", hub=hub, steps=1, quantization="int4", **FAST)  # type: ignore[arg-type]

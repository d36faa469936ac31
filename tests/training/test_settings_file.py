"""Settings files: lorahub's TOML schema, kohya configs (TOML and the GUI's JSON) and kohya ``ss_*`` metadata read
into the same settings, field by field; unmapped keys are listed, unknown ones refused with the nearest name."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from lorahub import Hub, errors
from lorahub.sdk.adding import AddOptions
from lorahub.sdk.train_settings import like_settings, training_settings
from lorahub.training.settings_file import read_kohya, read_settings

KOHYA_TOML = """
pretrained_model_name_or_path = "runwayml/stable-diffusion-v1-5"
train_data_dir = "/data/mychar"
output_name = "mychar"
output_dir = "/out"
network_module = "networks.lora"
network_dim = 16
network_alpha = 8
learning_rate = 1e-4
unet_lr = 2e-4
network_train_unet_only = true
max_train_steps = 1600
train_batch_size = 4
resolution = "512,512"
lr_scheduler = "cosine"
lr_warmup_steps = 0.1
mixed_precision = "fp16"
seed = 42
enable_bucket = true
min_bucket_reso = 320
max_bucket_reso = 960
bucket_reso_steps = 32
bucket_no_upscale = true
shuffle_caption = true
keep_tokens = 1
caption_dropout_rate = 0.05
noise_offset = 0.0357
min_snr_gamma = 5
gradient_accumulation_steps = 2
gradient_checkpointing = true
cache_latents = true
optimizer_type = "Prodigy"
xformers = true
"""

EXPECTED = {
    "rank": 16, "alpha": 8.0, "lr": 2e-4, "train_text_encoder": False, "steps": 1600, "batch": 4, "resolution": 512,
    "scheduler": "cosine", "warmup": 160, "mixed_precision": "fp16", "seed": 42, "buckets": True, "min_bucket": 320,
    "max_bucket": 960, "bucket_step": 32, "bucket_no_upscale": True, "shuffle_captions": True, "keep_tokens": 1,
    "caption_dropout": 0.05, "noise_offset": 0.0357, "min_snr_gamma": 5.0, "grad_accum": 2,
    "gradient_checkpointing": True, "cache_latents": True, "network": "lora",
}  # fmt: skip


def test_a_kohya_config_gives_the_same_settings_field_by_field(tmp_path: Path) -> None:
    path = tmp_path / "kohya.toml"
    path.write_text(KOHYA_TOML)
    settings = read_kohya(path)
    assert dict(settings.config) == EXPECTED
    config = settings.train_config()
    assert all(getattr(config, name) == value for name, value in EXPECTED.items())
    assert dict(settings.run) == {"base": "runwayml/stable-diffusion-v1-5", "data": "/data/mychar", "name": "mychar"}
    unmapped = {item.split(" = ")[0] for item in settings.unmapped}
    assert unmapped == {"output_dir", "optimizer_type", "xformers"}  # said, not dropped
    assert any("Prodigy" in item and "AdamW" in item for item in settings.unmapped)
    assert "settings from kohya config" in settings.notes[0]


def test_the_kohya_gui_json_and_lycoris_networks(tmp_path: Path) -> None:
    path = tmp_path / "gui.json"
    gui = {
        "learning_rate": "0.0001", "max_resolution": "768,512", "network_dim": 8, "min_snr_gamma": 0,
        "network_module": "lycoris.kohya", "network_args": "algo=lokr conv_dim=4", "max_train_steps": "100",
        "lr_scheduler": "polynomial",
    }  # fmt: skip
    path.write_text(json.dumps(gui))
    settings = read_kohya(path)
    assert settings.config["network"] == "lokr" and settings.config["resolution"] == 624  # the area of 768×512
    assert settings.config["min_snr_gamma"] is None and settings.config["steps"] == 100
    assert settings.config["train_text_encoder"] is True  # kohya trains the text encoders unless told not to
    assert {item.split(" = ")[0] for item in settings.unmapped} == {"network_args.conv_dim", "lr_scheduler"}
    dora = tmp_path / "dora.toml"
    dora.write_text('network_module = "lycoris.kohya"\nnetwork_args = ["algo=lora", "dora_wd=True"]\n')
    assert read_kohya(dora).config["network"] == "dora"


def test_lorahub_settings_file_and_flags_over_it(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    path = tmp_path / "run.toml"
    path.write_text(
        'data = "data"\nbase = "org/model"\nrank = 8\nlr = 5e-5\nbuckets = true\nadam_betas = [0.9, 0.99]\n'
    )
    settings = training_settings(config_file=path, given={"rank": 16, "name": "mine"})
    assert settings.run == {"data": str(tmp_path / "data"), "base": "org/model", "name": "mine"}
    config = settings.train_config()
    assert (config.rank, config.lr, config.buckets, config.adam_betas) == (16, 5e-5, True, (0.9, 0.99))
    # the written file reads back to the same settings
    written = tmp_path / "again.toml"
    written.write_text(settings.to_toml())
    assert read_settings(written).train_config() == config
    path.write_text("rnak = 8\n")
    with pytest.raises(errors.TrainingError, match="unknown setting 'rnak'") as caught:
        read_settings(path)
    assert "Did you mean 'rank'?" in str(caught.value.hint)
    path.write_text('rank = "8"\n')
    with pytest.raises(errors.TrainingError, match="rank = '8' is not a whole number"):
        read_settings(path)


def test_like_reads_kohya_ss_metadata(hub: Hub, tmp_path: Path) -> None:
    from safetensors.numpy import load_file, save_file

    from lorahub.dev.example_lora import write_example_lora

    path = tmp_path / "kohya-trained.safetensors"
    write_example_lora(path, rank=4, alpha=2.0)
    metadata = read_metadata(path) | {
        "ss_learning_rate": "0.0001", "ss_unet_lr": "None", "ss_text_encoder_lr": "5e-05",
        "ss_network_train_unet_only": "False", "ss_max_train_steps": "1200", "ss_resolution": "(768, 768)",
        "ss_noise_offset": "0.05", "ss_min_snr_gamma": "5.0", "ss_shuffle_caption": "True", "ss_keep_tokens": "1",
        "ss_caption_dropout_rate": "0.0", "ss_enable_bucket": "True", "ss_min_bucket_reso": "256",
        "ss_max_bucket_reso": "1536", "ss_bucket_no_upscale": "False", "ss_seed": "1234", "ss_lr_scheduler": "cosine",
        "ss_lr_warmup_steps": "50", "ss_gradient_accumulation_steps": "1", "ss_batch_size_per_device": "2",
        "ss_mixed_precision": "bf16", "ss_cache_latents": "True", "ss_session_id": "1234",
        "ss_zero_terminal_snr": "True", "ss_network_args": json.dumps({"algo": "loha"}),
        "ss_network_module": "lycoris.kohya",
    }  # fmt: skip
    save_file(load_file(str(path)), str(path), metadata=metadata)
    hub.add(path, AddOptions(name="theirs", license="MIT"))
    settings = like_settings(hub, "theirs")
    assert dict(settings.config) == {
        "rank": 4, "alpha": 2.0, "lr": 1e-4, "train_text_encoder": True, "text_encoder_lr": 5e-5, "steps": 1200,
        "resolution": 768,
        "noise_offset": 0.05, "min_snr_gamma": 5.0, "shuffle_captions": True, "keep_tokens": 1, "caption_dropout": 0.0,
        "buckets": True, "min_bucket": 256, "max_bucket": 1536, "bucket_no_upscale": False, "seed": 1234,
        "scheduler": "cosine", "warmup": 50, "grad_accum": 1, "batch": 2, "mixed_precision": "bf16",
        "cache_latents": True, "network": "loha",
    }  # fmt: skip
    assert [item.split(" = ")[0] for item in settings.unmapped] == ["ss_zero_terminal_snr"]
    assert settings.sources == ("the ss_* metadata of theirs@1",)


def read_metadata(path: Path) -> dict[str, str]:
    from lorahub.files.safetensors import read_header

    return dict(read_header(path).metadata)


def test_print_config_from_the_shell(tmp_path: Path) -> None:
    from tests.cli.test_catalog_cli import Home

    home = Home(tmp_path / "home")
    kohya = tmp_path / "kohya.toml"
    kohya.write_text(KOHYA_TOML)
    printed = home.run("train", "--from-kohya", str(kohya), "--rank", "32", "--no-buckets", "--print-config").stdout
    settings = tomllib.loads(printed)
    assert (settings["rank"], settings["buckets"], settings["lr"], settings["name"]) == (32, False, 2e-4, "mychar")
    assert "# not mapped: optimizer_type = 'Prodigy'" in printed
    bad = tmp_path / "bad.toml"
    bad.write_text("learning_rate = 1e-4\n")
    failed = home.run("train", "--config", str(bad), "--print-config", check=False)
    assert failed.returncode != 0 and "unknown setting 'learning_rate'" in failed.stderr
    assert "Did you mean 'lr'" in failed.stderr or "Known settings" in failed.stderr

"""`lorahub train` with the network options: each reaches the run and its card."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.cli.test_catalog_cli import Home
from tests.training.conftest import write_squares

pytest.importorskip("diffusers")


def test_network_options_reach_the_card(tmp_path: Path, tiny_bases: Mapping[str, Path]) -> None:
    home = Home(tmp_path / "home")
    home.run("keys", "create", "Trainer <trainer@example.com>")
    data = write_squares(tmp_path / "data", 1)
    result = home.run(
        "train", "--base", str(tiny_bases["sd1"]), "--data", str(data), "--name", "net", "--steps", "1",
        "--resolution", "64", "--network", "loha", "--train-text-encoder", "--text-encoder-lr", "0.001",
        "--ema-decay", "0.9", "--json",
    )  # fmt: skip
    hyper = json.loads(result.stdout)["training"]["hyperparameters"]
    assert (hyper["network"], hyper["train_text_encoder"], hyper["text_encoder_lr"]) == ("loha", True, "0.001")
    assert (hyper["ema_decay"], hyper["processes"], hyper["world_size"], hyper["effective_batch"]) == ("0.9", 1, 1, 1)
    refused = home.run("train", "--base", str(tiny_bases["sd1"]), "--data", str(data), "--ema-decay", "1.5",
                       check=False)  # fmt: skip
    assert refused.returncode != 0 and "ema_decay = 1.5" in refused.stderr

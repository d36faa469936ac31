"""Data-parallel training on CPU: two processes (gloo), started by ``processes=2``, catalogue one version whose card
records the world size, and train exactly like one process with their global batch."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pytest

import lorahub
from lorahub import Hub
from lorahub.files.safetensors import read_header
from tests.training.conftest import TRAINER, write_squares
from tests.training.test_networks import _state

torch = pytest.importorskip("torch")
pytest.importorskip("accelerate")

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {"steps": 2, "lr": 1e-2, "resolution": 64, "log_every": 1, "device": "cpu", "train_text_encoder": True}


@pytest.mark.slow
def test_two_processes_train_like_one_with_their_global_batch(
    hub: Hub, tiny_bases: Mapping[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))  # the worker's
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    data = write_squares(tmp_path / "data", 4)
    two = lorahub.train(tiny_bases["sd1"], data, name="dp", hub=hub, batch=1, processes=2, **SETTINGS)
    assert [v.version for v in two.versions] == [1] and len(hub.list_versions()) == 1  # only the main one wrote
    hyper = two.training["hyperparameters"]
    assert (hyper["world_size"], hyper["processes"], hyper["batch"], hyper["effective_batch"]) == (2, 2, 1, 2)
    header = read_header(hub.blobs.path_for(hub.version("dp").blob_sha256))
    assert header.metadata["ss_total_batch_size"] == "2" and header.metadata["ss_batch_size_per_device"] == "1"

    single = Hub.open(tmp_path / "single")
    single.create_identity(TRAINER)
    one = lorahub.train(tiny_bases["sd1"], data, name="dp", hub=single, batch=2, **SETTINGS)
    assert one.training["hyperparameters"]["world_size"] == 1
    for prefix in ("lora.", "te.text_encoder."):
        split, whole = _state(hub, two.training, prefix), _state(single, one.training, prefix)
        assert set(split) == set(whole)
        for key in whole:  # Adam turns float-rounding-sized gradients into whole steps on a rare element: compare
            # each tensor as a whole (its steps, ~1e-2 per element, are what a wrong average would change)
            assert float((split[key] - whole[key]).norm()) <= 1e-3 * float(whole[key].norm()), key
    losses = [[float(p[1]) for p in r.training["loss_curve"]["points"]] for r in (two, one)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)  # the reported loss is the global batch's mean

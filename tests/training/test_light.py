"""Reaching lorahub.train and `lorahub train --help` loads no torch: only a run does."""

from __future__ import annotations

from tests.test_imports import _heavy_modules_after


def test_train_entry_points_are_light() -> None:
    body = (
        "import lorahub\nlorahub.train\nlorahub.TrainConfig().check()\n"
        "from lorahub.cli import cli\ncli.main(['train', '--help'], standalone_mode=False)"
    )
    assert _heavy_modules_after(body) == []

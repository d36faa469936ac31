"""Training-run rows on SQLite and PostgreSQL: started, checkpointed, failed, reopened by a resume; the row stores
exactly the one run record."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from lorahub import errors
from lorahub.registry.catalog import Catalog
from lorahub.registry.models import TrainingRun
from lorahub.registry.runs import JSON_COLUMNS, RunRecord, RunRow, TrainingRuns


def _run(run_id: str, name: str = "style", *, steps_done: int = 0, steps_total: int = 10) -> RunRecord:
    return RunRecord(
        run_id=run_id, name=name, trainer="f" * 64, base_name="sd15", base_weights_digest="a" * 64,
        dataset_digest="b" * 64, steps_done=steps_done, steps_total=steps_total, config={"rank": 4, "lr": "0.0001"},
        started_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )  # fmt: skip


def test_a_run_moves_from_running_to_finished_and_is_reopened_by_resume(catalog: Catalog) -> None:
    runs = TrainingRuns(catalog.engine)
    runs.start(_run("r1"))
    assert runs.get("r1").status == "running" and runs.get("r1").latest_version is None
    runs.checkpoint("r1", step=5, version=1, digest="c" * 64, final=False)
    row = runs.get("r1")
    assert (row.status, row.steps_done, row.latest_version) == ("running", 5, 1)
    runs.checkpoint("r1", step=10, version=2, digest="d" * 64, final=True)
    row = runs.get("r1")
    assert (row.status, row.steps_done, row.latest_digest) == ("finished", 10, "d" * 64)
    assert row.finished_at is not None and row.started_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert row.as_dict()["latest"] == "style@2" and row.config == {"rank": 4, "lr": "0.0001"}

    runs.start(_run("r1", steps_done=10, steps_total=20))  # a resume continues the same row
    row = runs.get("r1")
    assert (row.status, row.steps_done, row.steps_total, row.finished_at) == ("running", 10, 20, None)


def test_failed_runs_and_listing(catalog: Catalog) -> None:
    runs = TrainingRuns(catalog.engine)
    runs.start(_run("r1", "a"))
    runs.start(_run("r2", "b"))
    runs.fail("r2")
    runs.fail("missing")  # nothing to mark: no error, a failing run must not hide its own error
    assert {(r.run_id, r.status) for r in runs.list()} == {("r1", "running"), ("r2", "failed")}
    assert [r.run_id for r in runs.list("a")] == ["r1"]
    with pytest.raises(errors.TrainingError, match="no training run nope"):
        runs.get("nope")


def test_the_table_stores_the_record_and_its_progress_field_for_field() -> None:
    columns = {JSON_COLUMNS.get(c, c) for c in TrainingRun.model_fields}
    assert columns == {f.name for f in dataclasses.fields(RunRow)}
    assert {f.name for f in dataclasses.fields(RunRecord)} < columns


def test_samples_are_listed_in_order_and_a_step_run_again_replaces_its_own(catalog: Catalog) -> None:
    runs = TrainingRuns(catalog.engine)
    runs.start(_run("r1"))
    assert runs.get("r1").samples == []
    runs.add_samples("r1", [{"step": 2, "index": 0, "path": "a"}, {"step": 2, "index": 1, "path": "b"}])
    runs.add_samples("r1", [{"step": 4, "index": 0, "path": "c"}])
    runs.add_samples("r1", [{"step": 4, "index": 0, "path": "c2"}])  # step 4 sampled again (a repeated resume)
    assert [s["path"] for s in runs.get("r1").samples] == ["a", "b", "c2"]
    assert runs.get("r1").as_dict()["samples"][0] == {"step": 2, "index": 0, "path": "a"}

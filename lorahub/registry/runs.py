"""Training-run rows: progress of ``lorahub train`` runs (see :class:`~lorahub.registry.models.TrainingRun`).

These writes append no audit event: they index progress that is recorded elsewhere (each checkpoint's card and
its ``train`` event), and a run's heartbeat is not an act anyone needs to prove. Callers get frozen
:class:`RunRow` values, never ORM rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Engine
from sqlmodel import col, select

from lorahub import errors
from lorahub.registry.db import read_transaction, write_transaction
from lorahub.registry.models import TrainingRun, utc_now

Status = Literal["running", "finished", "failed"]


@dataclass(frozen=True)
class RunRow:
    run_id: str
    name: str
    status: str
    trainer: str
    base_name: str
    base_weights_digest: str
    dataset_digest: str
    steps_done: int
    steps_total: int
    latest_version: int | None
    latest_digest: str | None
    config: dict[str, Any]
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "name": self.name,
            "status": self.status,
            "trainer": self.trainer,
            "base_name": self.base_name,
            "base_weights_digest": self.base_weights_digest,
            "dataset_digest": self.dataset_digest,
            "steps_done": self.steps_done,
            "steps_total": self.steps_total,
            "latest": f"{self.name}@{self.latest_version}" if self.latest_version is not None else None,
            "latest_digest": self.latest_digest,
            "config": self.config,
            "started_at": self.started_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }


@dataclass(frozen=True)
class NewRun:
    run_id: str
    name: str
    trainer: str
    base_name: str
    base_weights_digest: str
    dataset_digest: str
    steps_done: int
    steps_total: int
    config: dict[str, Any]
    started_at: datetime


class TrainingRuns:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def start(self, run: NewRun) -> None:
        """Record a run as ``running``; a resumed run's row is reopened (same id) with its new total."""
        with write_transaction(self.engine) as session:
            row = session.get(TrainingRun, run.run_id)
            if row is None:
                row = TrainingRun(
                    run_id=run.run_id,
                    name=run.name,
                    status="running",
                    trainer=run.trainer,
                    base_name=run.base_name,
                    base_weights_digest=run.base_weights_digest,
                    dataset_digest=run.dataset_digest,
                    steps_done=run.steps_done,
                    steps_total=run.steps_total,
                    config_json=json.dumps(run.config, sort_keys=True),
                    started_at=run.started_at,
                )
            else:
                row.status, row.steps_total, row.finished_at = "running", run.steps_total, None
                row.config_json, row.updated_at = json.dumps(run.config, sort_keys=True), utc_now()
            session.add(row)

    def checkpoint(self, run_id: str, *, step: int, version: int, digest: str, final: bool) -> None:
        with write_transaction(self.engine) as session:
            row = self._row(session, run_id)
            row.steps_done, row.latest_version, row.latest_digest = step, version, digest
            row.updated_at = utc_now()
            if final:
                row.status, row.finished_at = "finished", row.updated_at
            session.add(row)

    def fail(self, run_id: str) -> None:
        with write_transaction(self.engine) as session:
            row = session.get(TrainingRun, run_id)
            if row is not None and row.status == "running":
                row.status, row.updated_at = "failed", utc_now()
                session.add(row)

    def get(self, run_id: str) -> RunRow:
        with read_transaction(self.engine) as session:
            return _view(self._row(session, run_id))

    def list(self, name: str | None = None) -> list[RunRow]:
        """Runs, newest first (optionally those of one adapter name)."""
        with read_transaction(self.engine) as session:
            query = select(TrainingRun)
            if name is not None:
                query = query.where(TrainingRun.name == name)
            rows = session.exec(query.order_by(col(TrainingRun.started_at).desc())).all()
            return [_view(row) for row in rows]

    @staticmethod
    def _row(session: Any, run_id: str) -> TrainingRun:
        row = session.get(TrainingRun, run_id)
        if row is None:
            raise errors.TrainingError(f"no training run {run_id} in this catalog")
        assert isinstance(row, TrainingRun)
        return row


def _view(row: TrainingRun) -> RunRow:
    return RunRow(
        run_id=row.run_id,
        name=row.name,
        status=row.status,
        trainer=row.trainer,
        base_name=row.base_name,
        base_weights_digest=row.base_weights_digest,
        dataset_digest=row.dataset_digest,
        steps_done=row.steps_done,
        steps_total=row.steps_total,
        latest_version=row.latest_version,
        latest_digest=row.latest_digest,
        config=json.loads(row.config_json),
        started_at=row.started_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
    )

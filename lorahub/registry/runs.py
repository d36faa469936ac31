"""Training runs: the one record of a ``lorahub train`` run, and the catalog rows that follow its progress.

:class:`RunRecord` is how every place spells a run: the catalog row (:class:`~lorahub.registry.models.TrainingRun`)
stores exactly its fields, and the run's resumable ``state.json`` and its cards' ``training`` field take their run
facts from it (:mod:`lorahub.sdk.training`). A test holds the row's columns to the record's fields.

These writes append no audit event: they index progress that is recorded elsewhere (each checkpoint's card and
its ``train`` event), and a run's heartbeat is not an act anyone needs to prove. Callers get frozen
:class:`RunRow` values, never ORM rows.
"""

from __future__ import annotations

import dataclasses
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

CONFIG_COLUMN = "config_json"
SAMPLES_COLUMN = "samples_json"
JSON_COLUMNS = {CONFIG_COLUMN: "config", SAMPLES_COLUMN: "samples"}
"""The columns whose name and form differ from their fields: stored as sorted-key JSON text."""


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    """One run: who trains what on which data with which settings, since when, and how far it has come."""

    run_id: str
    name: str
    """The adapter name its checkpoints are catalogued under."""
    trainer: str
    """The fingerprint of the key that signs its cards."""
    base_name: str
    base_weights_digest: str
    dataset_digest: str
    """The digest of the consent manifest of the images trained on."""
    steps_done: int
    steps_total: int
    config: dict[str, Any]
    """The settings in the card's form (``TrainConfig.card_dict()``)."""
    started_at: datetime
    """A resumed run keeps its first part's start."""


@dataclass(frozen=True, kw_only=True)
class RunRow(RunRecord):
    """A run as the catalog has it now: its record, where it stands and what it has made so far."""

    status: str
    latest_version: int | None
    latest_digest: str | None
    updated_at: datetime
    finished_at: datetime | None
    samples: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """The images rendered from its sample prompts, oldest first (:mod:`lorahub.sdk.samples` writes them)."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, in the table's column order; ``latest`` is the newest checkpoint as ``NAME@V``."""
        out: dict[str, Any] = {}
        for column in TrainingRun.model_fields:
            name = JSON_COLUMNS.get(column, column)
            value = getattr(self, name)
            if name == "latest_version":
                name, value = "latest", f"{self.name}@{value}" if value is not None else None
            out[name] = value.isoformat() if isinstance(value, datetime) else value
        return out


class TrainingRuns:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def start(self, run: RunRecord) -> None:
        """Record a run as ``running``; a resumed run's row is reopened (same id) with its new total."""
        with write_transaction(self.engine) as session:
            row = session.get(TrainingRun, run.run_id)
            if row is None:
                row = TrainingRun(**_columns(run), status="running")
            else:
                row.status, row.steps_total, row.finished_at = "running", run.steps_total, None
                row.config_json, row.updated_at = _config_text(run.config), utc_now()
            session.add(row)

    def checkpoint(self, run_id: str, *, step: int, version: int, digest: str, final: bool) -> None:
        with write_transaction(self.engine) as session:
            row = self._row(session, run_id)
            row.steps_done, row.latest_version, row.latest_digest = step, version, digest
            row.updated_at = utc_now()
            if final:
                row.status, row.finished_at = "finished", row.updated_at
            session.add(row)

    def add_samples(self, run_id: str, samples: list[dict[str, Any]]) -> None:
        """Append samples; one of the same step and index as a listed one (a step run again) replaces it."""
        with write_transaction(self.engine) as session:
            row = self._row(session, run_id)
            new = {(s["step"], s["index"]) for s in samples}
            kept = [s for s in json.loads(row.samples_json) if (s["step"], s["index"]) not in new]
            row.samples_json = json.dumps(kept + samples, sort_keys=True)
            row.updated_at = utc_now()
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


def _columns(run: RunRecord) -> dict[str, Any]:
    values = {field.name: getattr(run, field.name) for field in dataclasses.fields(RunRecord)}
    values[CONFIG_COLUMN] = _config_text(values.pop("config"))
    return values


def _config_text(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True)


def _view(row: TrainingRun) -> RunRow:
    values = {column: getattr(row, column) for column in TrainingRun.model_fields if column not in JSON_COLUMNS}
    json_values = {name: json.loads(getattr(row, column)) for column, name in JSON_COLUMNS.items()}
    return RunRow(**values, **json_values)

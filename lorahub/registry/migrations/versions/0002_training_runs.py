"""Training runs: one row per ``lorahub train`` run, updated as it checkpoints.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "training_run",
        sa.Column("run_id", sa.String(), primary_key=True),
        sa.Column("name", sa.String(), nullable=False),
        *(
            sa.Column(name, sa.String(), nullable=False)
            for name in ("status", "trainer", "base_name", "base_weights_digest", "dataset_digest")
        ),
        sa.Column("steps_done", sa.Integer(), nullable=False),
        sa.Column("steps_total", sa.Integer(), nullable=False),
        sa.Column("latest_version", sa.Integer(), nullable=True),
        sa.Column("latest_digest", sa.String(), nullable=True),
        sa.Column("config_json", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_training_run_name", "training_run", ["name"])


def downgrade() -> None:
    op.drop_index("ix_training_run_name", table_name="training_run")
    op.drop_table("training_run")

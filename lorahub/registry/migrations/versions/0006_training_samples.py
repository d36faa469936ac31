"""Training samples: the images a run rendered from its sample prompts, listed in its row.

Revision ID: 0006_training_samples
Revises: 0005_team_roles
Create Date: 2026-12-14

``training_run.samples_json`` holds the run's samples as JSON text (step, prompt, path in the home, the signed
image's SHA-256, the adapter version it names): :mod:`lorahub.sdk.samples`. Existing runs made none (``[]``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_training_samples"
down_revision: str | None = "0005_team_roles"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("training_run") as batch:
        batch.add_column(sa.Column("samples_json", sa.Text(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("training_run") as batch:
        batch.drop_column("samples_json")

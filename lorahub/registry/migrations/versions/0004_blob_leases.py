"""Blob leases: writers and garbage collection claim a blob in the catalogue before they touch it.

Revision ID: 0004_blob_leases
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_blob_leases"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "blob_lease",
        sa.Column("id", sa.Integer(), primary_key=True),
        *(sa.Column(name, sa.String(), nullable=False) for name in ("sha256", "purpose", "holder")),
        sa.Column("taken_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_blob_lease_sha256", "blob_lease", ["sha256"])


def downgrade() -> None:
    op.drop_index("ix_blob_lease_sha256", table_name="blob_lease")
    op.drop_table("blob_lease")

"""Locations: library files catalogued in place, where they lie on the user's disk.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "location",
        sa.Column("id", sa.Integer(), primary_key=True),
        *(sa.Column(name, sa.String(), nullable=False) for name in ("path", "sha256", "content_digest")),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in ("size", "mtime_ns", "inode", "device")),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("linked", sa.Boolean(), nullable=False),
        sa.Column("neighbours", sa.Text(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.Column("seen_at", sa.DateTime(), nullable=False),
    )
    for name in ("path", "sha256", "content_digest", "state"):
        op.create_index(f"ix_location_{name}", "location", [name])
    op.create_index("ix_location_path_sha256", "location", ["path", "sha256"], unique=True)


def downgrade() -> None:
    op.drop_table("location")

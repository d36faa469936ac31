"""The initial catalog: adapters, versions, blobs, signatures, keys, the audit chain, the file cache, search.

Revision ID: 0001
Revises:
Create Date: 2025-11-22

On SQLite it also creates ``search_fts``, an FTS5 index over ``search_text`` (external content: the words are
stored once, in ``search_text``) kept in sync by triggers, so rows inserted by any means are searchable.
The ``ascii`` tokenizer splits only on ASCII punctuation and folds only ASCII case: ``search_text`` already holds
lowercase words free of punctuation, split in Python, so FTS5 sees exactly the words PostgreSQL's scan sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FTS_SQL = (
    "CREATE VIRTUAL TABLE search_fts USING fts5("
    "name_terms, terms, content='search_text', content_rowid='version_id', tokenize='ascii')",
    "CREATE TRIGGER search_text_ai AFTER INSERT ON search_text BEGIN "
    "INSERT INTO search_fts(rowid, name_terms, terms) VALUES (new.version_id, new.name_terms, new.terms); END",
    "CREATE TRIGGER search_text_ad AFTER DELETE ON search_text BEGIN "
    "INSERT INTO search_fts(search_fts, rowid, name_terms, terms) "
    "VALUES ('delete', old.version_id, old.name_terms, old.terms); END",
    "CREATE TRIGGER search_text_au AFTER UPDATE ON search_text BEGIN "
    "INSERT INTO search_fts(search_fts, rowid, name_terms, terms) "
    "VALUES ('delete', old.version_id, old.name_terms, old.terms); "
    "INSERT INTO search_fts(rowid, name_terms, terms) VALUES (new.version_id, new.name_terms, new.terms); END",
)


def _now_columns(*names: str, nullable: bool = False) -> list[sa.Column[datetime]]:
    return [sa.Column(name, sa.DateTime(), nullable=nullable) for name in names]


def upgrade() -> None:
    op.create_table(
        "adapter",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(), nullable=False),
        *_now_columns("created_at"),
    )
    op.create_index("ix_adapter_name", "adapter", ["name"], unique=True)
    op.create_table(
        "blob",
        sa.Column("sha256", sa.String(), primary_key=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        *_now_columns("created_at"),
    )
    _create_version()
    _create_signature()
    op.create_table(
        "signing_key",
        sa.Column("fingerprint", sa.String(), primary_key=True),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("public_pem", sa.Text(), nullable=False),
        sa.Column("own", sa.Boolean(), nullable=False),
        sa.Column("trusted", sa.Boolean(), nullable=False),
        *_now_columns("added_at"),
        *_now_columns("revoked_at", nullable=True),
    )
    _create_audit()
    op.create_table(
        "file_cache",
        sa.Column("path", sa.String(), primary_key=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mtime_ns", sa.BigInteger(), nullable=False),
        sa.Column("inode", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(), nullable=False),
        sa.Column("content_digest", sa.String(), nullable=True),
        *_now_columns("checked_at"),
    )
    _create_search()


def _create_version() -> None:
    text_columns = ("description", "trigger_words", "tags", "card_json", "signers")
    op.create_table(
        "version",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("adapter_id", sa.Integer(), sa.ForeignKey("adapter.id"), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("content_digest", sa.String(), nullable=False),
        sa.Column("blob_sha256", sa.String(), sa.ForeignKey("blob.sha256"), nullable=False),
        *(
            sa.Column(name, sa.String(), nullable=False)
            for name in ("file_name", "format", "family", "license_id", "commercial_use", "consent_status")
        ),
        *(sa.Column(name, sa.Text(), nullable=False) for name in text_columns),
        *_now_columns("created_at"),
        *_now_columns("removed_at", nullable=True),
    )
    op.create_index("ix_version_adapter_number", "version", ["adapter_id", "number"], unique=True)
    op.create_index("ix_version_content_digest", "version", ["content_digest"])
    op.create_index("ix_version_blob_sha256", "version", ["blob_sha256"])


def _create_signature() -> None:
    op.create_table(
        "signature",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("version_id", sa.Integer(), sa.ForeignKey("version.id"), nullable=False),
        sa.Column("keyid", sa.String(), nullable=False),
        sa.Column("sig", sa.Text(), nullable=False),
        *_now_columns("added_at"),
    )
    op.create_index("ix_signature_version_keyid", "signature", ["version_id", "keyid"], unique=True)
    op.create_index("ix_signature_keyid", "signature", ["keyid"])


def _create_audit() -> None:
    op.create_table(
        "audit_event",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("time", sa.String(), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("subject_name", sa.String(), nullable=True),
        sa.Column("subject_version", sa.Integer(), nullable=True),
        sa.Column("subject_digest", sa.String(), nullable=True),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(), nullable=False),
        sa.Column("hash", sa.String(), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
    )
    for column in ("actor", "action", "subject_name"):
        op.create_index(f"ix_audit_event_{column}", "audit_event", [column])
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(), nullable=False),
    )


def _create_search() -> None:
    op.create_table(
        "search_text",
        sa.Column("version_id", sa.Integer(), sa.ForeignKey("version.id"), primary_key=True, autoincrement=False),
        sa.Column("name_terms", sa.Text(), nullable=False),
        sa.Column("terms", sa.Text(), nullable=False),
    )
    if op.get_bind().dialect.name == "sqlite":
        for statement in FTS_SQL:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS search_fts")
    for table in (
        "search_text",
        "file_cache",
        "audit_head",
        "audit_event",
        "signing_key",
        "signature",
        "version",
        "blob",
        "adapter",
    ):
        op.drop_table(table)

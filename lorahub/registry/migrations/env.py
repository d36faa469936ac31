"""Alembic environment: runs on the connection that :func:`lorahub.registry.db.migrate` hands over.

``migrate`` opens the (serialised) transaction itself and passes its connection in ``config.attributes``, so the
upgrade joins that transaction. Run from the alembic command line instead, a ``sqlalchemy.url`` option is used.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection
from sqlmodel import SQLModel

from lorahub.registry import models  # noqa: F401  (registers the tables on SQLModel.metadata)
from lorahub.registry.db import include_name


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        include_name=include_name,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
    )
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run(connection)
        return
    from lorahub.registry.db import connect

    engine = connect(context.config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as fresh:
        run(fresh)
        fresh.commit()


main()

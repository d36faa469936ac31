"""Alembic migrations of the catalog; run them with :func:`lorahub.registry.db.migrate`."""

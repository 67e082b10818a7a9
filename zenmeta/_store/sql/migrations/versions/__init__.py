"""One module per schema version (Alembic revisions ``0001``, ``0002``, …)."""

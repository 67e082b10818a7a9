"""Alembic migration scripts for the store's schema, run by ``..migrate``.

One script per schema version (``versions/v000N_*.py``, revision ``"000N"``);
they run programmatically, inside the transaction that holds the store's
write lock, so no ``alembic.ini`` or ``env.py`` is needed. Write a new one
for every change to ``..schema``'s tables and bump ``SCHEMA_VERSION``.
"""

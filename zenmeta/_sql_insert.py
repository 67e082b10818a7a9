"""Bulk inserts: what the writer thread spends its time on.

Rows come grouped by *shape*, the indexes of the columns they fill; columns
outside the shape are NULL. On SQLite the driver is called directly with one
multi-row ``INSERT`` per block of rows, which was measured to matter three
ways (on this project's 2-core benchmark machine, Python 3.11):

- SQLAlchemy's ``executemany`` processes every parameter of every row in
  Python, several µs a row, more than SQLite's own insert;
- ``sqlite3``'s ``executemany`` releases the interpreter lock for each row,
  and a busy step loop in another thread then holds it for up to the 5 ms
  switch interval before giving it back: 280 µs a row was measured;
- ``sqlite3`` binds ``None`` through its adapter lookup, ~0.3 µs each, so
  NULLs are written as literals in the statement of their shape instead.

Other databases go through SQLAlchemy Core, which knows their dialects.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Any

from sqlalchemy import Connection, Table

__all__ = ["Shape", "insert_rows", "shape_of"]

Shape = tuple[int, ...]
"""The indexes, in column order, of the columns a row gives values for."""

_MAX_BLOCK = 2048
_VARIABLE_NUMBER = getattr(sqlite3, "SQLITE_LIMIT_VARIABLE_NUMBER", 9)
_statements: dict[tuple[str, Shape, int], str] = {}


def shape_of(row: Sequence[Any]) -> tuple[Shape, tuple[Any, ...]]:
    """A full row split into its shape and its non-NULL values (for rare rows)."""
    shape = tuple(index for index, value in enumerate(row) if value is not None)
    return shape, tuple(row[index] for index in shape)


def insert_rows(
    connection: Connection, table: Table, shaped: Mapping[Shape, list[tuple[Any, ...]]]
) -> None:
    """Insert every row of every shape, inside the caller's transaction."""
    if connection.dialect.name != "sqlite":
        names = [column.name for column in table.columns]
        for shape, rows in shaped.items():
            if rows:
                blank = dict.fromkeys(names)
                picked = [names[index] for index in shape]
                connection.execute(
                    table.insert(),
                    [{**blank, **dict(zip(picked, row, strict=True))} for row in rows],
                )
        return
    driver = connection.connection.driver_connection
    cursor = driver.cursor()  # type: ignore[union-attr]
    try:
        for shape, rows in shaped.items():
            total = len(rows)
            if not total:
                continue
            size = _block_size(driver, len(shape))
            done = 0
            while done < total:
                while size > total - done:
                    size //= 2
                block = rows[done : done + size]
                cursor.execute(_insert_sql(table, shape, size), list(chain.from_iterable(block)))
                done += size
    finally:
        cursor.close()


def _block_size(driver: Any, width: int) -> int:
    """The largest power-of-two block of rows one statement may bind."""
    try:
        limit = driver.getlimit(_VARIABLE_NUMBER)
    except AttributeError:  # Python 3.10 cannot ask; assume SQLite's smallest default
        limit = 999
    size = _MAX_BLOCK
    while size > 1 and size * max(width, 1) > limit:
        size //= 2
    return size


def _insert_sql(table: Table, shape: Shape, rows: int) -> str:
    key = (table.name, shape, rows)
    sql = _statements.get(key)
    if sql is None:
        present = set(shape)
        names = ", ".join(column.name for column in table.columns)
        marks = ", ".join(
            "?" if index in present else "NULL" for index in range(len(table.columns))
        )
        sql = f"INSERT INTO {table.name} ({names}) VALUES " + ", ".join([f"({marks})"] * rows)
        _statements[key] = sql
    return sql

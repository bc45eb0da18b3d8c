"""Indexes for the sorted catalog (price, name, created_at; each either way): one per sort
key, and one more with the active flag first for the lists customers see (active only).
Each ends with the id, the tie-breaker, so that a keyset page is an index range, never a
scan or a sort of the table. Names are indexed as they compare (NOCASE: A-Z folded)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when a migration runs, not at every start
    import sqlite_utils

STATEMENTS = (
    "CREATE INDEX products_price_id ON products (price, id)",
    "CREATE INDEX products_active_price_id ON products (active, price, id)",
    "CREATE INDEX products_name_id ON products (name COLLATE NOCASE, id)",
    "CREATE INDEX products_active_name_id ON products (active, name COLLATE NOCASE, id)",
    "CREATE INDEX products_created_at_id ON products (created_at, id)",
    "CREATE INDEX products_active_created_at_id ON products (active, created_at, id)",
)


def apply(db: sqlite_utils.Database) -> None:
    for statement in STATEMENTS:
        db.execute(statement)

"""The console's dashboard reads a few figures of the whole shop every time the store
changes: each gets an index that answers it from a range the size of the answer, so that a
store of a million orders costs it no more than one of a hundred. The orders of a day or a
week (covering: the count and the sum of totals read no row), every refund still pending,
and the active products lowest in stock."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when a migration runs, not at every start
    import sqlite_utils

STATEMENTS = (
    "CREATE INDEX orders_created_at ON orders (created_at, currency, status, total)",
    "CREATE INDEX refunds_status_id ON refunds (status, id)",
    "CREATE INDEX products_active_stock_id ON products (active, stock, id)",
)


def apply(db: sqlite_utils.Database) -> None:
    for statement in STATEMENTS:
        db.execute(statement)

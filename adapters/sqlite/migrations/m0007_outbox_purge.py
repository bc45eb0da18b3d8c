"""What the outbox purge reads: delivered events by delivery time, undelivered ones by when
they occurred. Both partial, so each holds only the rows its half of the purge looks at,
and both are read from their oldest end."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when a migration runs, not at every start
    import sqlite_utils

STATEMENTS = (
    "CREATE INDEX outbox_delivered_at ON outbox (delivered_at) WHERE delivered_at IS NOT NULL",
    "CREATE INDEX outbox_undelivered_occurred_at ON outbox (occurred_at) WHERE delivered_at IS NULL",
)


def apply(db: sqlite_utils.Database) -> None:
    for statement in STATEMENTS:
        db.execute(statement)

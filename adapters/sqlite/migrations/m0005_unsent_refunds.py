"""Refunds reserved but never acknowledged by the provider, found by the housekeeping task
every round: a partial index that holds only those rows, ordered by creation time."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when a migration runs, not at every start
    import sqlite_utils

STATEMENTS = (
    "CREATE INDEX refunds_unsent ON refunds (created_at) WHERE status = 'pending' AND provider_reference IS NULL",
)


def apply(db: sqlite_utils.Database) -> None:
    for statement in STATEMENTS:
        db.execute(statement)

"""Version 9 of the one schema: what several instances share (signing keys, the key of
request digests, throttle counts) gets tables in the PostgreSQL store. A SQLite store is
used by the processes of one machine, which share them through the data directory (the
keys directory and the diskcache throttle): nothing changes here but the version."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when a migration runs, not at every start
    import sqlite_utils


def apply(db: sqlite_utils.Database) -> None:
    pass

"""Idempotency keys: one row per (scope, key), written in the transaction of the effect;
the response is attached right after and replayed to repeats for 24 hours."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlite_utils

STATEMENTS = (
    """
    CREATE TABLE idempotency_keys (
        scope TEXT NOT NULL,
        key TEXT NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
        fingerprint TEXT NOT NULL,
        created_at TEXT NOT NULL,
        status INTEGER CHECK (status IS NULL OR status BETWEEN 100 AND 599),
        headers TEXT,
        body BLOB,
        PRIMARY KEY (scope, key)
    ) STRICT, WITHOUT ROWID
    """,
    "CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at)",
)


def apply(db: sqlite_utils.Database) -> None:
    for statement in STATEMENTS:
        db.execute(statement)

"""Personal API keys (core/domain/api_keys.py): only the keyed digest of each secret is
kept, unique, and found by it on every request a key makes. A user's keys are listed newest
first through (user_id, id); every key's, through the primary key."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when a migration runs, not at every start
    import sqlite_utils

STATEMENTS = (
    """
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
        scopes TEXT NOT NULL CHECK (length(scopes) > 0),
        secret_digest TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        last_used_at TEXT,
        revoked_at TEXT
    ) STRICT, WITHOUT ROWID
    """,
    # Also what ON DELETE CASCADE searches.
    "CREATE INDEX api_keys_user_id_id ON api_keys (user_id, id)",
)


def apply(db: sqlite_utils.Database) -> None:
    for statement in STATEMENTS:
        db.execute(statement)

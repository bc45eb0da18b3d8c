"""Ended sessions, look-alike emails, keyed request fingerprints and the stock ceiling.

- ``revoked_sessions``: sessions that ended while their access tokens may be unexpired
  (core/services/sessions.py). ``seq`` orders records as they were committed (SQLite
  serializes writers), which is what readers catch up by.
- ``users.email_skeleton``: the address's confusable skeleton (UTS #39), unique. Existing
  accounts get theirs here; where two existing addresses already look alike, the older
  account keeps the skeleton and the newer one is left without (NULL is never equal).
- ``idempotency_keys.fingerprint`` was an unkeyed SHA-256 of the request, from which a
  password sent with an Idempotency-Key could be recovered by guessing. Fingerprints are
  keyed now; the old ones are wiped (empty: such a key replays its response for any
  body until it expires, within a day).
- ``products.stock`` can never pass the ceiling of core/domain/catalog.py (a billion).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.auth.skeletons import Uts39Skeletons

if TYPE_CHECKING:  # imported when a migration runs, not at every start
    import sqlite_utils

MAX_STOCK = 10**9
UNKNOWN_FINGERPRINT = ""

STATEMENTS = (
    """
    CREATE TABLE revoked_sessions (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL,
        revoked_at TEXT NOT NULL,
        until TEXT NOT NULL
    ) STRICT
    """,
    "CREATE INDEX revoked_sessions_until ON revoked_sessions (until)",
    "ALTER TABLE users ADD COLUMN email_skeleton TEXT",
    f"UPDATE idempotency_keys SET fingerprint = '{UNKNOWN_FINGERPRINT}'",
    f"""
    CREATE TRIGGER products_stock_ceiling_insert BEFORE INSERT ON products
    WHEN NEW.stock > {MAX_STOCK} BEGIN SELECT RAISE(ABORT, 'stock above its ceiling'); END
    """,
    f"""
    CREATE TRIGGER products_stock_ceiling_update BEFORE UPDATE OF stock ON products
    WHEN NEW.stock > {MAX_STOCK} BEGIN SELECT RAISE(ABORT, 'stock above its ceiling'); END
    """,
)


def apply(db: sqlite_utils.Database) -> None:
    for statement in STATEMENTS:
        db.execute(statement)
    skeletons = Uts39Skeletons()
    taken: set[str] = set()
    for user_id, email in db.execute("SELECT id, email FROM users ORDER BY created_at, id").fetchall():
        skeleton = skeletons.skeleton(email)
        if skeleton in taken:
            continue
        taken.add(skeleton)
        db.execute("UPDATE users SET email_skeleton = ? WHERE id = ?", (skeleton, user_id))
    db.execute("CREATE UNIQUE INDEX users_email_skeleton ON users (email_skeleton)")

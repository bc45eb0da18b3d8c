"""Ended sessions, look-alike emails, keyed request fingerprints and the stock ceiling.

- ``revoked_sessions``: sessions that ended while their access tokens may be unexpired
  (core/services/sessions.py). ``seq`` orders records as they were committed (SQLite
  serializes writers), which is what readers catch up by.
- ``users.email``: brought to the form sign-in now compares (NFKC), where no other account
  has it already.
- ``users.email_skeleton``: the address's confusable skeleton (UTS #39), unique. Existing
  accounts get theirs here; where two existing addresses already look alike, the older
  account keeps the skeleton and the newer one is left without (NULL is never equal).
- ``idempotency_keys.fingerprint`` was an unkeyed SHA-256 of the request, from which a
  password sent with an Idempotency-Key could be recovered by guessing. Fingerprints are
  keyed now; the old ones are wiped (empty: such a key replays its response for any
  body until it expires, within a day).
- ``products.stock`` can never pass the ceiling of core/domain/catalog.py (a billion); a
  product the previous release left above it is brought down to it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.auth.skeletons import Uts39Skeletons
from core.domain.errors import ValidationFailed
from core.domain.users import normalize_email

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
    # A session is recorded once; readers load the live records through `until` (the
    # index holds seq too, as every SQLite index holds its rowid) and purge by it.
    "CREATE UNIQUE INDEX revoked_sessions_session ON revoked_sessions (session_id)",
    "CREATE INDEX revoked_sessions_until ON revoked_sessions (until)",
    "ALTER TABLE users ADD COLUMN email_skeleton TEXT",
    f"UPDATE idempotency_keys SET fingerprint = '{UNKNOWN_FINGERPRINT}'",
    # The previous release let a release of stock pass the ceiling: such a product comes
    # down to it (a new version, so copies of it are rendered again).
    f"UPDATE products SET stock = {MAX_STOCK}, version = version + 1 WHERE stock > {MAX_STOCK}",
    f"""
    CREATE TRIGGER products_stock_ceiling_insert BEFORE INSERT ON products
    WHEN NEW.stock > {MAX_STOCK} BEGIN SELECT RAISE(ABORT, 'stock above its ceiling'); END
    """,
    # Only a rise past the ceiling: an update that leaves stock as it is, or lowers it, passes.
    f"""
    CREATE TRIGGER products_stock_ceiling_update BEFORE UPDATE OF stock ON products
    WHEN NEW.stock > {MAX_STOCK} AND NEW.stock > OLD.stock
    BEGIN SELECT RAISE(ABORT, 'stock above its ceiling'); END
    """,
)


def apply(db: sqlite_utils.Database) -> None:
    for statement in STATEMENTS:
        db.execute(statement)
    skeletons = Uts39Skeletons()
    accounts = db.execute("SELECT id, email FROM users ORDER BY created_at, id").fetchall()
    emails = {email for _, email in accounts}
    taken: set[str] = set()
    for user_id, email in accounts:
        # Emails were stored lower-cased only; sign-in now compares NFKC forms, so each is
        # brought to its new form (unless another account already has that form: the older
        # account keeps it). One with invisible characters keeps its form: no sign-in can
        # type it, which is the point; the operator sees it in `tillbox users list`.
        try:
            normal = normalize_email(email)
        except ValidationFailed:
            normal = email
        if normal != email and normal not in emails:
            db.execute("UPDATE users SET email = ? WHERE id = ?", (normal, user_id))
            emails.add(normal)
        skeleton = skeletons.skeleton(normal)  # of the form sign-in compares, applied or not
        if skeleton in taken:
            continue
        taken.add(skeleton)
        db.execute("UPDATE users SET email_skeleton = ? WHERE id = ?", (skeleton, user_id))
    db.execute("CREATE UNIQUE INDEX users_email_skeleton ON users (email_skeleton)")

"""Users, products (with their full-text index), refresh tokens and the audit log.

Every table is STRICT: a value of the wrong type is refused, not converted. The CHECK
constraints repeat the domain's rules as a second line of defence. There is an index
for every query of ``adapters/sqlite/repositories.py``; tests/integration checks the
plans. Lists are keyset-paginated by id, so every filter index ends with ``id``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when a migration runs, not at every start
    import sqlite_utils

STATEMENTS = (
    # Users: the email is stored normalized (lower-cased) by the domain, so a plain UNIQUE
    # is case-insensitive uniqueness; the CHECK catches an ASCII upper-case slipping through.
    """
    CREATE TABLE users (
        id TEXT PRIMARY KEY,
        email TEXT NOT NULL UNIQUE CHECK (email = lower(email) AND length(email) <= 254),
        password_hash TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('customer', 'staff', 'admin')),
        status TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    ) STRICT, WITHOUT ROWID
    """,
    "CREATE INDEX users_role_id ON users (role, id)",
    "CREATE INDEX users_status_id ON users (status, id)",
    # Products: `seq` is an explicit INTEGER PRIMARY KEY (an implicit rowid may be
    # renumbered by VACUUM, and the full-text index refers to it); `id` is the public key.
    """
    CREATE TABLE products (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        sku TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        description TEXT NOT NULL,
        price INTEGER NOT NULL CHECK (price >= 0),
        currency TEXT NOT NULL CHECK (length(currency) = 3),
        stock INTEGER NOT NULL CHECK (stock >= 0),
        active INTEGER NOT NULL CHECK (active IN (0, 1)),
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        version INTEGER NOT NULL CHECK (version >= 1)
    ) STRICT
    """,
    # Lists of active products in id order; the price in the index lets a price range be
    # checked without reading the row.
    "CREATE INDEX products_active_id ON products (active, id, price)",
    """
    CREATE VIRTUAL TABLE products_fts USING fts5 (
        name, sku, description,
        content = 'products', content_rowid = 'seq',
        tokenize = 'unicode61 remove_diacritics 2'
    )
    """,
    """
    CREATE TRIGGER products_fts_insert AFTER INSERT ON products BEGIN
        INSERT INTO products_fts (rowid, name, sku, description)
        VALUES (new.seq, new.name, new.sku, new.description);
    END
    """,
    """
    CREATE TRIGGER products_fts_delete AFTER DELETE ON products BEGIN
        INSERT INTO products_fts (products_fts, rowid, name, sku, description)
        VALUES ('delete', old.seq, old.name, old.sku, old.description);
    END
    """,
    # A stock or price change rewrites the row but not its words: leave the index alone.
    """
    CREATE TRIGGER products_fts_update AFTER UPDATE OF name, sku, description ON products
    WHEN old.name IS NOT new.name OR old.sku IS NOT new.sku OR old.description IS NOT new.description
    BEGIN
        INSERT INTO products_fts (products_fts, rowid, name, sku, description)
        VALUES ('delete', old.seq, old.name, old.sku, old.description);
        INSERT INTO products_fts (rowid, name, sku, description)
        VALUES (new.seq, new.name, new.sku, new.description);
    END
    """,
    # Refresh tokens: only the digest of the secret is stored.
    """
    CREATE TABLE refresh_tokens (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        family_id TEXT NOT NULL,
        token_digest TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        used_at TEXT,
        revoked_at TEXT
    ) STRICT, WITHOUT ROWID
    """,
    "CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id)",
    # Also what ON DELETE CASCADE searches.
    "CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id)",
    # The audit log: append-only, newest first by id. No foreign key on actor_id: the
    # record outlives the account.
    """
    CREATE TABLE audit_log (
        id TEXT PRIMARY KEY,
        at TEXT NOT NULL,
        actor_id TEXT,
        action TEXT NOT NULL,
        object_type TEXT NOT NULL,
        object_id TEXT,
        source_ip TEXT,
        details TEXT NOT NULL CHECK (json_valid(details))
    ) STRICT, WITHOUT ROWID
    """,
    "CREATE INDEX audit_log_actor_id ON audit_log (actor_id, id)",
    "CREATE INDEX audit_log_action_id ON audit_log (action, id)",
    "CREATE INDEX audit_log_object_type_id ON audit_log (object_type, id)",
    "CREATE INDEX audit_log_object_id_id ON audit_log (object_id, id)",
    """
    CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log BEGIN
        SELECT RAISE(ABORT, 'the audit log is append-only');
    END
    """,
    """
    CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log BEGIN
        SELECT RAISE(ABORT, 'the audit log is append-only');
    END
    """,
)


def apply(db: sqlite_utils.Database) -> None:
    for statement in STATEMENTS:
        db.execute(statement)

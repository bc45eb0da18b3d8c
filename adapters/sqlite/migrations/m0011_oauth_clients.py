"""The registry of OAuth clients (core/domain/oauth.py): one row a client, its lists (redirect
URIs, grant types, scopes) as JSON arrays of text, its secret only as a keyed digest. The
CHECKs repeat the domain's rules: a confidential client has a digest and a public one none;
the list of an admin's filter by status is keyset-paginated by id."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when a migration runs, not at every start
    import sqlite_utils

STATEMENTS = (
    """
    CREATE TABLE oauth_clients (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
        type TEXT NOT NULL CHECK (type IN ('confidential', 'public')),
        redirect_uris TEXT NOT NULL CHECK (json_valid(redirect_uris) AND json_type(redirect_uris) = 'array'),
        grant_types TEXT NOT NULL CHECK (json_valid(grant_types) AND json_type(grant_types) = 'array'),
        scopes TEXT NOT NULL CHECK (json_valid(scopes) AND json_type(scopes) = 'array'),
        status TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
        secret_digest TEXT,
        secret_rotated_at TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        created_by TEXT,
        CHECK ((type = 'confidential') = (secret_digest IS NOT NULL))
    ) STRICT, WITHOUT ROWID
    """,
    "CREATE INDEX oauth_clients_status_id ON oauth_clients (status, id)",
)


def apply(db: sqlite_utils.Database) -> None:
    for statement in STATEMENTS:
        db.execute(statement)

"""What users grant OAuth clients (core/domain/grants.py): the authorization codes (only their
keyed digests; single use, the session an exchange began recorded with its use), the
remembered consents (one a user and client), and the refresh tokens of a client's session
marked with the client and the scopes granted (NULL both for a first-party session).

A client's sessions are found by client, then user, then time (the user taking an
authorization back), or by client, then time (the client disabled: only the sessions that
may still hold live access tokens, not every token the client was ever given): two partial
indexes, which first-party tokens (most of them) stay out of.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when a migration runs, not at every start
    import sqlite_utils

STATEMENTS = (
    # A code's challenge is what RFC 7636 §4.2 lets a client send (43 to 128 characters; an
    # S256 one is 43, and the protocol layer checks no more than the grammar). A code is used
    # once, and its use names the session it began.
    """
    CREATE TABLE authorization_codes (
        id TEXT PRIMARY KEY,
        code_digest TEXT NOT NULL UNIQUE,
        client_id TEXT NOT NULL REFERENCES oauth_clients (id) ON DELETE CASCADE,
        user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        redirect_uri TEXT NOT NULL CHECK (length(redirect_uri) > 0),
        scope TEXT NOT NULL,
        code_challenge TEXT NOT NULL CHECK (length(code_challenge) BETWEEN 43 AND 128),
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        used_at TEXT,
        family_id TEXT,
        CHECK (expires_at > created_at),
        CHECK ((used_at IS NULL) = (family_id IS NULL))
    ) STRICT, WITHOUT ROWID
    """,
    # What ON DELETE CASCADE searches, from a user and from a client.
    "CREATE INDEX authorization_codes_user ON authorization_codes (user_id)",
    "CREATE INDEX authorization_codes_client ON authorization_codes (client_id)",
    # The purge of expired codes, oldest first.
    "CREATE INDEX authorization_codes_expires ON authorization_codes (expires_at)",
    # The primary key serves a user's list, in client order, and a user's cascade.
    """
    CREATE TABLE oauth_consents (
        user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        client_id TEXT NOT NULL REFERENCES oauth_clients (id) ON DELETE CASCADE,
        scope TEXT NOT NULL,
        granted_at TEXT NOT NULL,
        updated_at TEXT NOT NULL CHECK (updated_at >= granted_at),
        PRIMARY KEY (user_id, client_id)
    ) STRICT, WITHOUT ROWID
    """,
    "CREATE INDEX oauth_consents_client ON oauth_consents (client_id)",
    # Added NULL to every existing token: the sessions made so far are first-party.
    "ALTER TABLE refresh_tokens ADD COLUMN client_id TEXT REFERENCES oauth_clients (id) ON DELETE CASCADE",
    "ALTER TABLE refresh_tokens ADD COLUMN scope TEXT CHECK ((scope IS NULL) = (client_id IS NULL))",
    "CREATE INDEX refresh_tokens_client_user ON refresh_tokens (client_id, user_id, created_at)"
    " WHERE client_id IS NOT NULL",
    "CREATE INDEX refresh_tokens_client_created ON refresh_tokens (client_id, created_at) WHERE client_id IS NOT NULL",
)


def apply(db: sqlite_utils.Database) -> None:
    for statement in STATEMENTS:
        db.execute(statement)

"""Forward-only, versioned schema migrations of the PostgreSQL store.

The versions and names are SQLite's (adapters/sqlite/migrations): one list of schema
versions, each written in both dialects, so that a store of either kind at version N has
the same tables, columns, keys and rules (tests/integration/test_postgres_schema.py holds
the two lists and the two schemas to each other). A migration added for one store is added
for the other in the same commit.

Where the dialects differ, each uses its own engine's means: ``timestamptz``, ``boolean``,
``jsonb`` and ``bytea`` for SQLite's text, integer and blob encodings; a ``tsvector`` with a
GIN index for the FTS5 table; CHECK constraints and PL/pgSQL triggers for SQLite's triggers;
ids and names compared byte for byte (``COLLATE "C"``), as SQLite compares them.

Migrations run under a transaction-level advisory lock, in one transaction: instances
starting at once queue for it, and the first applies what is pending while the others
then find nothing left to do. PostgreSQL's DDL is transactional, so a failing migration
leaves the schema as it was.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NamedTuple

import asyncpg

from adapters.sqlite.migrations import MIGRATIONS as SQLITE_MIGRATIONS


class Migration(NamedTuple):
    version: int
    name: str
    sql: str


_INITIAL = """
CREATE TABLE users (
    id text COLLATE "C" PRIMARY KEY,
    email text COLLATE "C" NOT NULL UNIQUE CHECK (email = lower(email) AND length(email) <= 254),
    password_hash text NOT NULL,
    role text NOT NULL CHECK (role IN ('customer', 'staff', 'admin')),
    status text NOT NULL CHECK (status IN ('active', 'disabled')),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX users_role_id ON users (role, id);
CREATE INDEX users_status_id ON users (status, id);

CREATE TABLE products (
    id text COLLATE "C" PRIMARY KEY,
    sku text COLLATE "C" NOT NULL UNIQUE,
    name text COLLATE "C" NOT NULL,
    description text NOT NULL,
    price bigint NOT NULL CHECK (price >= 0),
    currency text NOT NULL CHECK (length(currency) = 3),
    stock bigint NOT NULL CHECK (stock >= 0),
    active boolean NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version bigint NOT NULL CHECK (version >= 1),
    -- The words of name, sku and description as FTS5's unicode61 tokenizer (remove_diacritics
    -- 2) makes them, computed by the repository: the same words match in both stores.
    search tsvector NOT NULL
);
CREATE INDEX products_search ON products USING gin (search);

CREATE TABLE refresh_tokens (
    id text COLLATE "C" PRIMARY KEY,
    user_id text COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family_id text COLLATE "C" NOT NULL,
    token_digest text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at timestamptz,
    revoked_at timestamptz
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);

CREATE TABLE audit_log (
    id text COLLATE "C" PRIMARY KEY,
    at timestamptz NOT NULL,
    actor_id text COLLATE "C",
    action text COLLATE "C" NOT NULL,
    object_type text COLLATE "C" NOT NULL,
    object_id text COLLATE "C",
    source_ip text,
    details jsonb NOT NULL
);
CREATE INDEX audit_log_actor_id ON audit_log (actor_id, id);
CREATE INDEX audit_log_action_id ON audit_log (action, id);
CREATE INDEX audit_log_object_type_id ON audit_log (object_type, id);
CREATE INDEX audit_log_object_id_id ON audit_log (object_id, id);
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END $$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
"""

# SQLite's covering indexes of the product list; PostgreSQL reads the same lists from the
# primary key and the (active, id) index, and returns the whole row anyway.
_PRODUCT_LIST_COVERING = """
CREATE INDEX products_active_id ON products (active, id);
"""

_ORDERS_PAYMENTS = """
CREATE TABLE orders (
    id text COLLATE "C" PRIMARY KEY,
    customer_id text COLLATE "C" NOT NULL,
    status text NOT NULL CHECK (status IN (
        'pending_payment', 'paid', 'fulfilled', 'cancelled', 'expired', 'partially_refunded', 'refunded'
    )),
    subtotal bigint NOT NULL CHECK (subtotal >= 0),
    total bigint NOT NULL CHECK (total >= 0),
    amount_paid bigint NOT NULL CHECK (amount_paid >= 0),
    amount_refunded bigint NOT NULL CHECK (amount_refunded >= 0 AND amount_refunded <= amount_paid),
    currency text NOT NULL CHECK (length(currency) = 3),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    expires_at timestamptz,
    version bigint NOT NULL CHECK (version >= 1)
);
CREATE INDEX orders_customer_id ON orders (customer_id, id);
CREATE INDEX orders_customer_status_id ON orders (customer_id, status, id);
CREATE INDEX orders_status_id ON orders (status, id);
CREATE INDEX orders_pending_expiry ON orders (expires_at) WHERE status = 'pending_payment';

CREATE TABLE order_lines (
    order_id text COLLATE "C" NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line_no integer NOT NULL CHECK (line_no >= 0 AND line_no < 100),
    product_id text COLLATE "C" NOT NULL,
    sku text NOT NULL,
    name text NOT NULL,
    unit_price bigint NOT NULL CHECK (unit_price >= 0),
    quantity integer NOT NULL CHECK (quantity BETWEEN 1 AND 1000),
    PRIMARY KEY (order_id, line_no),
    UNIQUE (order_id, product_id)
);

CREATE TABLE payments (
    id text COLLATE "C" PRIMARY KEY,
    order_id text COLLATE "C" NOT NULL REFERENCES orders (id),
    method text NOT NULL CHECK (method IN ('card', 'manual')),
    provider text NOT NULL CHECK (provider IN ('stripe', 'manual')),
    status text NOT NULL CHECK (status IN ('requires_action', 'processing', 'succeeded', 'failed', 'canceled')),
    amount bigint NOT NULL CHECK (amount > 0),
    currency text NOT NULL CHECK (length(currency) = 3),
    provider_reference text,
    client_secret text,
    next_action jsonb,
    failure_code text,
    reference text CHECK (reference IS NULL OR length(reference) BETWEEN 1 AND 200),
    payment_method text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version bigint NOT NULL CHECK (version >= 1)
);
CREATE UNIQUE INDEX payments_provider_reference ON payments (provider_reference) WHERE provider_reference IS NOT NULL;
CREATE INDEX payments_order_id ON payments (order_id, id);

CREATE TABLE refunds (
    id text COLLATE "C" PRIMARY KEY,
    payment_id text COLLATE "C" NOT NULL REFERENCES payments (id),
    order_id text COLLATE "C" NOT NULL REFERENCES orders (id),
    amount bigint NOT NULL CHECK (amount > 0),
    currency text NOT NULL CHECK (length(currency) = 3),
    reason text NOT NULL,
    status text NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    provider_reference text,
    failure_code text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version bigint NOT NULL CHECK (version >= 1)
);
CREATE INDEX refunds_order_id ON refunds (order_id, id);
CREATE INDEX refunds_payment_id ON refunds (payment_id, id);
-- The payment's row is locked first, so that two transactions refunding one payment at
-- once are checked one after the other: each sees the other's refund.
CREATE FUNCTION refunds_within_captured() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    captured bigint;
BEGIN
    IF NEW.status = 'failed' THEN
        RETURN NEW;
    END IF;
    SELECT CASE WHEN status = 'succeeded' THEN amount ELSE 0 END INTO captured
        FROM payments WHERE id = NEW.payment_id FOR UPDATE;
    IF NEW.amount + (
        SELECT coalesce(sum(amount), 0) FROM refunds WHERE payment_id = NEW.payment_id AND status <> 'failed'
    ) > coalesce(captured, 0) THEN
        RAISE EXCEPTION 'refunds exceed what the payment captured' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refunds_within_captured BEFORE INSERT ON refunds
    FOR EACH ROW EXECUTE FUNCTION refunds_within_captured();

CREATE TABLE outbox (
    id text COLLATE "C" PRIMARY KEY,
    type text NOT NULL,
    aggregate_type text NOT NULL,
    aggregate_id text NOT NULL,
    payload jsonb NOT NULL,
    occurred_at timestamptz NOT NULL,
    delivered_at timestamptz
);
CREATE INDEX outbox_pending ON outbox (id) WHERE delivered_at IS NULL;

CREATE TABLE provider_events (
    provider text NOT NULL,
    event_id text NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (provider, event_id)
);
"""

_IDEMPOTENCY = """
CREATE TABLE idempotency_keys (
    scope text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    fingerprint text NOT NULL,
    created_at timestamptz NOT NULL,
    status integer CHECK (status IS NULL OR status BETWEEN 100 AND 599),
    headers jsonb,
    body bytea,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
"""

_UNSENT_REFUNDS = """
CREATE INDEX refunds_unsent ON refunds (created_at) WHERE status = 'pending' AND provider_reference IS NULL;
"""

# SQLite's migration 6 also re-normalizes old emails, wipes unkeyed fingerprints and lowers
# stock above the ceiling: a PostgreSQL store never held any of those.
_SESSIONS_SKELETONS = """
CREATE TABLE revoked_sessions (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id text COLLATE "C" NOT NULL UNIQUE,
    revoked_at timestamptz NOT NULL,
    until timestamptz NOT NULL,
    -- The transaction that recorded the session: sequence numbers are not committed in
    -- order, transaction ids against a snapshot's horizon tell what is new (see
    -- PostgresRevokedSessions).
    txn xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX revoked_sessions_until ON revoked_sessions (until);
CREATE INDEX revoked_sessions_txn ON revoked_sessions (txn, seq);
ALTER TABLE users ADD COLUMN email_skeleton text COLLATE "C";
CREATE UNIQUE INDEX users_email_skeleton ON users (email_skeleton);
ALTER TABLE products ADD CONSTRAINT products_stock_ceiling CHECK (stock <= 1000000000);
"""

_OUTBOX_PURGE = """
CREATE INDEX outbox_delivered_at ON outbox (delivered_at) WHERE delivered_at IS NOT NULL;
CREATE INDEX outbox_undelivered_occurred_at ON outbox (occurred_at) WHERE delivered_at IS NULL;
"""

# Names sort with A-Z folded to a-z and nothing else changed (ProductSort): translate() in
# the C collation does exactly that, where lower() would fold other letters too.
_PRODUCT_SORTS = """
CREATE FUNCTION tillbox_name_key(name text) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN translate(name, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz') COLLATE "C";
CREATE INDEX products_price_id ON products (price, id);
CREATE INDEX products_active_price_id ON products (active, price, id);
CREATE INDEX products_name_id ON products (tillbox_name_key(name), id);
CREATE INDEX products_active_name_id ON products (active, tillbox_name_key(name), id);
CREATE INDEX products_created_at_id ON products (created_at, id);
CREATE INDEX products_active_created_at_id ON products (active, created_at, id);
"""

# What several instances must share, kept in the store (see adapters/postgres/shared.py).
_SHARED_STATE = """
CREATE TABLE signing_keys (
    kid text COLLATE "C" PRIMARY KEY,
    created_at timestamptz NOT NULL,
    document text NOT NULL
);
CREATE TABLE store_secrets (
    name text COLLATE "C" PRIMARY KEY,
    value bytea NOT NULL
);
CREATE TABLE throttle_uses (
    key text COLLATE "C" NOT NULL,
    at double precision NOT NULL,
    ticket text NOT NULL,
    expires double precision NOT NULL
);
CREATE INDEX throttle_uses_key_at ON throttle_uses (key, at);
CREATE INDEX throttle_uses_expires ON throttle_uses (expires);
"""

# The dashboard's figures (see SQLite's migration 10).
_DASHBOARD_FIGURES = """
CREATE INDEX orders_created_at ON orders (created_at, currency, status, total);
CREATE INDEX refunds_status_id ON refunds (status, id);
CREATE INDEX products_active_stock_id ON products (active, stock, id);
"""

# The registry of OAuth clients (see SQLite's migration 11); lists as arrays of text.
_OAUTH_CLIENTS = """
CREATE TABLE oauth_clients (
    id text COLLATE "C" PRIMARY KEY,
    name text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    type text NOT NULL CHECK (type IN ('confidential', 'public')),
    redirect_uris text[] NOT NULL,
    grant_types text[] NOT NULL,
    scopes text[] NOT NULL,
    status text NOT NULL CHECK (status IN ('active', 'disabled')),
    secret_digest text,
    secret_rotated_at timestamptz,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    created_by text COLLATE "C",
    CHECK ((type = 'confidential') = (secret_digest IS NOT NULL))
);
CREATE INDEX oauth_clients_status_id ON oauth_clients (status, id);
"""

# What users grant OAuth clients (see SQLite's migration 12): codes, consents, and the
# client and scopes of a client's session (NULL both for a first-party one).
_OAUTH_GRANTS = """
CREATE TABLE authorization_codes (
    id text COLLATE "C" PRIMARY KEY,
    code_digest text NOT NULL UNIQUE,
    client_id text COLLATE "C" NOT NULL REFERENCES oauth_clients (id) ON DELETE CASCADE,
    user_id text COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    redirect_uri text NOT NULL CHECK (char_length(redirect_uri) > 0),
    scope text NOT NULL,
    code_challenge text NOT NULL CHECK (char_length(code_challenge) BETWEEN 43 AND 128),
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at timestamptz,
    family_id text COLLATE "C",
    CHECK (expires_at > created_at),
    CHECK ((used_at IS NULL) = (family_id IS NULL))
);
CREATE INDEX authorization_codes_user ON authorization_codes (user_id);
CREATE INDEX authorization_codes_client ON authorization_codes (client_id);
CREATE INDEX authorization_codes_expires ON authorization_codes (expires_at);

CREATE TABLE oauth_consents (
    user_id text COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id text COLLATE "C" NOT NULL REFERENCES oauth_clients (id) ON DELETE CASCADE,
    scope text NOT NULL,
    granted_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL CHECK (updated_at >= granted_at),
    PRIMARY KEY (user_id, client_id)
);
CREATE INDEX oauth_consents_client ON oauth_consents (client_id);

ALTER TABLE refresh_tokens
    ADD COLUMN client_id text COLLATE "C" REFERENCES oauth_clients (id) ON DELETE CASCADE,
    ADD COLUMN scope text,
    ADD CHECK ((scope IS NULL) = (client_id IS NULL));
CREATE INDEX refresh_tokens_client_user ON refresh_tokens (client_id, user_id, created_at)
    WHERE client_id IS NOT NULL;
CREATE INDEX refresh_tokens_client_created ON refresh_tokens (client_id, created_at) WHERE client_id IS NOT NULL;
"""

# Personal API keys (see SQLite's migration 13).
_API_KEYS = """
CREATE TABLE api_keys (
    id text COLLATE "C" PRIMARY KEY,
    user_id text COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    scopes text NOT NULL CHECK (length(scopes) > 0),
    secret_digest text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    last_used_at timestamptz,
    revoked_at timestamptz
);
CREATE INDEX api_keys_user_id_id ON api_keys (user_id, id);
"""

_SQL = (
    _INITIAL,
    _PRODUCT_LIST_COVERING,
    _ORDERS_PAYMENTS,
    _IDEMPOTENCY,
    _UNSENT_REFUNDS,
    _SESSIONS_SKELETONS,
    _OUTBOX_PURGE,
    _PRODUCT_SORTS,
    _SHARED_STATE,
    _DASHBOARD_FIGURES,
    _OAUTH_CLIENTS,
    _OAUTH_GRANTS,
    _API_KEYS,
)

MIGRATIONS: tuple[Migration, ...] = tuple(
    Migration(m.version, m.name, sql) for m, sql in zip(SQLITE_MIGRATIONS, _SQL, strict=True)
)
LATEST_VERSION: int = MIGRATIONS[-1].version

#: The advisory lock migrations hold: an arbitrary constant, the same in every instance.
MIGRATION_LOCK = 0x7469_6C6C_626F_7801  # "tillbox" and 1

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS _migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL
)
"""
_TABLE_EXISTS = "SELECT to_regclass('_migrations') IS NOT NULL"
_CURRENT_VERSION = "SELECT coalesce(max(version), 0) FROM _migrations"


class MigrationError(RuntimeError):
    pass


async def current_version(conn: asyncpg.Connection) -> int:
    """The schema version of the database; 0 if no migration was ever applied."""
    if not await conn.fetchval(_TABLE_EXISTS):
        return 0
    return int(await conn.fetchval(_CURRENT_VERSION))


def _check_not_newer(version: int) -> None:
    if version > LATEST_VERSION:
        raise MigrationError(
            f"the database has schema version {version}, newer than this Tillbox knows ({LATEST_VERSION}); "
            "upgrade Tillbox instead of downgrading the database."
        )


async def apply_migrations(conn: asyncpg.Connection) -> int:
    """Apply what is pending, under the migration lock; return the schema version."""
    version = await current_version(conn)
    _check_not_newer(version)
    if version == LATEST_VERSION:
        return version  # the common start: no lock needed
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(_CREATE_TABLE)
        version = await current_version(conn)  # again, under the lock: another instance may have migrated
        _check_not_newer(version)
        for migration in MIGRATIONS[version:]:
            try:
                await conn.execute(migration.sql)
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"migration {migration.version} ({migration.name}) failed: {exc}") from exc
            await conn.execute(
                "INSERT INTO _migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                datetime.now(UTC),
            )
    return LATEST_VERSION

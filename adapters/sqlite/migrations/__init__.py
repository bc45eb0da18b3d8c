"""Forward-only, versioned schema migrations.

Each migration is a module with ``apply(db: sqlite_utils.Database)``, listed below with
an explicit import (so that PyInstaller bundles it). A run takes the database's write
lock (``BEGIN IMMEDIATE``) for its whole length and applies every pending migration in
that one transaction, recording each in ``_migrations``: two processes starting at once
apply each migration exactly once, and a migration that fails leaves the schema as it was.
"""

from __future__ import annotations

import pathlib
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NamedTuple

from adapters.sqlite.connection import connect, is_busy
from adapters.sqlite.migrations import (
    m0001_initial,
    m0002_product_list_covering,
    m0003_orders_payments,
    m0004_idempotency,
    m0005_unsent_refunds,
    m0006_sessions_skeletons,
    m0007_outbox_purge,
    m0008_product_sorts,
    m0009_shared_state,
    m0010_dashboard_figures,
    m0011_oauth_clients,
    m0012_oauth_grants,
    m0013_api_keys,
)
from adapters.timestamps import format_timestamp
from core.domain.errors import Unavailable

if TYPE_CHECKING:
    import sqlite_utils


class Migration(NamedTuple):
    version: int
    name: str
    apply: Callable[[sqlite_utils.Database], None]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial", m0001_initial.apply),
    Migration(2, "product list covering indexes", m0002_product_list_covering.apply),
    Migration(3, "orders, payments, refunds, outbox, provider events", m0003_orders_payments.apply),
    Migration(4, "idempotency keys", m0004_idempotency.apply),
    Migration(5, "unsent refunds index", m0005_unsent_refunds.apply),
    Migration(6, "ended sessions, email skeletons, keyed fingerprints, stock ceiling", m0006_sessions_skeletons.apply),
    Migration(7, "outbox purge indexes", m0007_outbox_purge.apply),
    Migration(8, "product sort indexes", m0008_product_sorts.apply),
    Migration(9, "state shared by instances", m0009_shared_state.apply),
    Migration(10, "dashboard figure indexes", m0010_dashboard_figures.apply),
    Migration(11, "oauth clients", m0011_oauth_clients.apply),
    Migration(12, "oauth grants: authorization codes, consents, client sessions", m0012_oauth_grants.apply),
    Migration(13, "personal API keys", m0013_api_keys.apply),
)

LATEST_VERSION: int = MIGRATIONS[-1].version

assert [m.version for m in MIGRATIONS] == list(range(1, LATEST_VERSION + 1)), "versions are 1, 2, 3, ..."

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS _migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TEXT NOT NULL
) STRICT
"""
_TABLE_EXISTS = "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = '_migrations'"
_CURRENT_VERSION = "SELECT coalesce(max(version), 0) FROM _migrations"
_RECORD = "INSERT INTO _migrations (version, name, applied_at) VALUES (?, ?, ?)"


#: How long a process waits for another one's migrations before it gives up.
MIGRATION_WAIT_MS = 10 * 60 * 1000


class MigrationError(RuntimeError):
    pass


def current_version(conn: sqlite3.Connection) -> int:
    """The schema version of an open database; 0 if no migration was ever applied."""
    if not conn.execute(_TABLE_EXISTS).fetchall():
        return 0
    version: int = conn.execute(_CURRENT_VERSION).fetchone()[0]
    return version


def _check_not_newer(version: int, path: pathlib.Path) -> None:
    if version > LATEST_VERSION:
        raise MigrationError(
            f"{path} has schema version {version}, newer than this Tillbox knows ({LATEST_VERSION}); "
            "upgrade Tillbox instead of downgrading the database."
        )


def apply_migrations(conn: sqlite3.Connection, path: pathlib.Path) -> int:
    """Apply what is pending on an autocommit connection; return the schema version."""
    version = current_version(conn)
    _check_not_newer(version, path)
    if version == LATEST_VERSION:
        return version  # the common start: no write lock needed
    # ~50 ms, and only when a migration looks pending; before the lock, not while holding it:
    # processes opening a new store together queue for the lock one after another.
    import sqlite_utils

    # Another process may be migrating a large store (index builds take seconds a million
    # rows): wait for it as long as a migration may take, not a request's busy timeout.
    (busy_timeout,) = conn.execute("PRAGMA busy_timeout").fetchone()
    conn.execute(f"PRAGMA busy_timeout = {max(busy_timeout, MIGRATION_WAIT_MS)}")
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if is_busy(exc):
            raise Unavailable(
                "Another process holds the database's write lock; migrations did not run.",
                code="database_busy",
                retry_after=1,
            ) from exc
        raise
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout)}")
    try:
        conn.execute(_CREATE_TABLE)
        version = current_version(conn)  # again, under the lock: another process may have migrated
        _check_not_newer(version, path)
        if version == LATEST_VERSION:
            conn.execute("ROLLBACK")  # it did: nothing to write (and no fsync to wait for)
            return version
        db = sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)
        for migration in MIGRATIONS[version:]:
            try:
                migration.apply(db)
            except Exception as exc:
                raise MigrationError(f"migration {migration.version} ({migration.name}) failed: {exc}") from exc
            conn.execute(_RECORD, (migration.version, migration.name, format_timestamp(datetime.now(UTC))))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return LATEST_VERSION


def migrate(path: pathlib.Path, *, busy_timeout_ms: int = 5000) -> int:
    """Create the database file (and its directory) if needed, apply pending migrations,
    and return the schema version."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = connect(path, busy_timeout_ms=busy_timeout_ms)
    try:
        return apply_migrations(conn, path)
    finally:
        conn.close()


def schema_version(path: pathlib.Path) -> int:
    """The schema version of the database file; 0 if it does not exist (it is not created)."""
    path = pathlib.Path(path)
    if not path.exists():
        return 0
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return current_version(conn)
    finally:
        conn.close()

"""Operator tasks on the PostgreSQL store: migrate, reset, back up, restore.

Backups are PostgreSQL's own: ``pg_dump --format=custom`` (one consistent snapshot while
the servers keep writing) and ``pg_restore --clean --single-transaction`` (all or nothing).
Where those programs are not installed, the operator is told in one line what to run
instead. The URL is never printed (it may hold a password): only its host and database.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import shutil
import subprocess

import asyncpg
from yarl import URL

from adapters.postgres.migrations import LATEST_VERSION, apply_migrations, current_version
from adapters.sqlite.maintenance import BackupError, BackupInfo
from core.domain.errors import Unavailable

# Everything the migrations create, in an order that drops dependents first (CASCADE covers
# the rest): `db reset` removes Tillbox's objects only, whatever else shares the database.
_TABLES = (
    "order_lines",
    "refunds",
    "payments",
    "orders",
    "refresh_tokens",
    "api_keys",
    "revoked_sessions",
    "audit_log",
    "outbox",
    "provider_events",
    "idempotency_keys",
    "products",
    "authorization_codes",
    "oauth_consents",
    "oauth_clients",
    "users",
    "signing_keys",
    "store_secrets",
    "throttle_uses",
    "_migrations",
)
#: Seconds to wait for the server before saying it cannot be reached.
CONNECT_TIMEOUT = 10
_FUNCTIONS = ("audit_log_append_only()", "refunds_within_captured()", "tillbox_name_key(text)")


def describe(url: str) -> str:
    """The database a URL names, for the operator, without credentials."""
    try:
        parsed = URL(url)
        host = parsed.host or "localhost"
        port = f":{parsed.port}" if parsed.explicit_port else ""
    except ValueError:  # several hosts, or something yarl cannot read: say nothing of it
        return "PostgreSQL database named by database.url"
    return f"PostgreSQL database {parsed.path.lstrip('/') or parsed.user or 'postgres'!r} on {host}{port}"


async def connect(url: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(url, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (str(exc).splitlines() or [type(exc).__name__])[0]
        raise Unavailable(
            f"cannot connect to the {describe(url)} named by database.url: {reason}", code="database_unavailable"
        ) from None


async def migrate(url: str) -> int:
    conn = await connect(url)
    try:
        return await apply_migrations(conn)
    finally:
        await conn.close()


async def reset(url: str) -> int:
    """Drop Tillbox's tables and functions, then migrate: an empty store."""
    conn = await connect(url)
    try:
        async with conn.transaction():
            await conn.execute(f"DROP TABLE IF EXISTS {', '.join(_TABLES)} CASCADE")
            for function in _FUNCTIONS:
                await conn.execute(f"DROP FUNCTION IF EXISTS {function} CASCADE")
        return await apply_migrations(conn)
    finally:
        await conn.close()


async def schema_version(url: str) -> int:
    conn = await connect(url)
    try:
        return await current_version(conn)
    finally:
        await conn.close()


def _tool(name: str, instead: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BackupError(f"{name} is not installed here; install the PostgreSQL client tools, or run {instead}")
    return path


def _environment(url: str) -> tuple[str, dict[str, str]]:
    """The URL without its password (in the user part or as a ``password`` parameter), and
    the environment that passes the password instead: a command line is visible to every
    user of the machine."""
    try:
        parsed = URL(url)
    except ValueError:
        raise BackupError("database.url cannot be read as one URL; run pg_dump or pg_restore yourself") from None
    env = dict(os.environ)
    password = parsed.password if parsed.password is not None else parsed.query.get("password")
    if password is not None:
        env["PGPASSWORD"] = password
        parsed = parsed.with_password(None).without_query_params("password")
    return str(parsed), env


def backup(url: str, target: pathlib.Path, *, overwrite: bool = False) -> BackupInfo:
    """``pg_dump`` the database to ``target`` (custom format), through a partial file."""
    if target.exists() and not overwrite:
        raise BackupError(f"{target} exists; choose another path or pass --force")
    if target.exists() and target.is_dir():
        raise BackupError(f"{target} is a directory; give a file path")
    pg_dump = _tool("pg_dump", f"pg_dump --format=custom --file={target} against the database")
    version = asyncio.run(schema_version(url))
    if version == 0:
        raise BackupError(f"the {describe(url)} holds no Tillbox store")
    partial = target.with_name(f".{target.name}.partial")
    safe_url, env = _environment(url)
    done = subprocess.run(
        [pg_dump, "--format=custom", "--no-owner", f"--file={partial}", f"--dbname={safe_url}"],
        env=env,
        # The dump holds the signing keys and every account: readable by its owner only.
        umask=0o077,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise BackupError(f"pg_dump failed: {_last_line(done.stderr)}")
    os.replace(partial, target)
    return BackupInfo(path=target, size_bytes=target.stat().st_size, schema_version=version)


def restore(source: pathlib.Path, url: str) -> BackupInfo:
    """Replace Tillbox's tables with those of a ``pg_dump`` backup, in one transaction."""
    if not source.is_file():
        raise BackupError(f"there is no backup at {source}")
    pg_restore = _tool("pg_restore", f"pg_restore --clean --if-exists --single-transaction {source}")
    listed = subprocess.run([pg_restore, "--list", str(source)], capture_output=True, text=True, check=False)
    if listed.returncode != 0 or " TABLE public _migrations " not in listed.stdout:
        raise BackupError(f"{source} is not a Tillbox backup made by `tillbox backup` on PostgreSQL")
    safe_url, env = _environment(url)
    done = subprocess.run(
        [
            pg_restore,
            "--clean",
            "--if-exists",
            "--single-transaction",
            "--no-owner",
            "--exit-on-error",
            f"--dbname={safe_url}",
            str(source),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise BackupError(f"pg_restore failed (nothing was changed): {_last_line(done.stderr)}")
    version = asyncio.run(schema_version(url))
    if version > LATEST_VERSION:
        raise BackupError(
            f"restored a backup at schema version {version}, newer than this Tillbox knows ({LATEST_VERSION}):"
            " run the Tillbox that made it"
        )
    return BackupInfo(path=source, size_bytes=source.stat().st_size, schema_version=version)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"

"""The PostgreSQL server the tests use: the machine's, at TILLBOX_TEST_POSTGRES_URL (by
default postgresql://postgres@127.0.0.1:5432/test, trust auth). Each test session creates
a database of its own there and drops it at the end; each test that needs an empty store
empties it first (truncate_all).

Without a server, the PostgreSQL tests skip, saying why, unless TILLBOX_REQUIRE_POSTGRES
is set (CI sets it: there a missing server is a failure, not a skip).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
from yarl import URL

from adapters.postgres import PostgresDatabase
from core.ports.clock import Clock

SERVER_URL = os.environ.get("TILLBOX_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRED = bool(os.environ.get("TILLBOX_REQUIRE_POSTGRES"))


def database_url(name: str) -> str:
    return str(URL(SERVER_URL).with_path(f"/{name}"))


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(SERVER_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _run(sql: str) -> None:
    """Run one statement on the server, from synchronous code (a session fixture), even one
    set up from inside a running event loop: on a thread of its own, with its own loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, _admin(sql)).result()


def create_database() -> str:
    """A new, empty database on the server; its URL. Skips (or fails, where required) if the
    server cannot be reached."""
    name = f"tillbox_test_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        _run(f'CREATE DATABASE "{name}"')
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        reason = f"no PostgreSQL server at {SERVER_URL} ({type(exc).__name__}: {exc})"
        if REQUIRED:
            pytest.fail(f"{reason}, and TILLBOX_REQUIRE_POSTGRES is set", pytrace=False)
        pytest.skip(reason)
    return database_url(name)


def drop_database(url: str) -> None:
    name = URL(url).path.lstrip("/")
    _run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The URL of this test session's database (migrated by whoever opens it first)."""
    url = create_database()
    try:
        yield url
    finally:
        drop_database(url)


async def truncate_all(url: str) -> None:
    """Empty every table but the migrations' record (the audit log's append-only trigger,
    like every trigger, does not fire for a session in replica mode)."""
    conn = await asyncpg.connect(url, timeout=5)
    try:
        tables = await conn.fetch(
            "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public' AND tablename <> '_migrations'"
        )
        if tables:
            await conn.execute(
                "SET session_replication_role = replica;"
                f" TRUNCATE {', '.join(row[0] for row in tables)} RESTART IDENTITY;"
                " SET session_replication_role = DEFAULT"
            )
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def emptied_stores(
    url: str, clock: Clock, count: int = 1, **settings: Any
) -> AsyncIterator[list[PostgresDatabase]]:
    """``count`` instances' connections (PostgresDatabase, small pools unless ``settings``
    say otherwise) to the database at ``url``, emptied first; closed on the way out."""
    await truncate_all(url)
    options = {"pool_min": 1, "pool_max": 4, **settings}
    stores = [PostgresDatabase(url, clock=clock, **options) for _ in range(count)]
    try:
        for store in stores:
            await store.open()
        yield stores
    finally:
        for store in stores:
            await store.close()

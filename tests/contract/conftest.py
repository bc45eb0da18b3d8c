"""The fixture every contract test takes: ``uow_factory``, a fresh and empty store of each
adapter on the test's movable ``clock``: the in-memory fake, SQLite, PostgreSQL (the
session's database, see tests/postgres.py)."""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import AsyncIterator

import pytest

from adapters.postgres import PostgresDatabase
from adapters.sqlite import SqliteDatabase
from core.ports.clock import Clock
from core.ports.unit_of_work import UnitOfWorkFactory
from tests.contract.builders import START, Make
from tests.fakes import FixedClock, InMemoryDatabase, SequentialIds
from tests.postgres import truncate_all


@contextlib.asynccontextmanager
async def _memory(tmp_path: pathlib.Path, clock: Clock) -> AsyncIterator[UnitOfWorkFactory]:
    yield InMemoryDatabase(clock)


@contextlib.asynccontextmanager
async def _sqlite(tmp_path: pathlib.Path, clock: Clock) -> AsyncIterator[UnitOfWorkFactory]:
    db = SqliteDatabase(tmp_path / "tillbox.db", clock=clock)
    await db.open()
    try:
        yield db
    finally:
        await db.close()


@contextlib.asynccontextmanager
async def _postgres(url: str, clock: Clock) -> AsyncIterator[UnitOfWorkFactory]:
    await truncate_all(url)
    db = PostgresDatabase(url, clock=clock, pool_min=1, pool_max=10)
    await db.open()
    try:
        yield db
    finally:
        await db.close()


ADAPTERS = ("memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres))


@pytest.fixture(params=ADAPTERS)
async def uow_factory(
    request: pytest.FixtureRequest, tmp_path: pathlib.Path, clock: FixedClock
) -> AsyncIterator[UnitOfWorkFactory]:
    store: contextlib.AbstractAsyncContextManager[UnitOfWorkFactory]
    if request.param == "memory":
        store = _memory(tmp_path, clock)
    elif request.param == "sqlite":
        store = _sqlite(tmp_path, clock)
    else:
        # The session's database, emptied: created once, not per test (it takes ~0.3 s).
        store = _postgres(request.getfixturevalue("postgres_url"), clock)
    async with store as factory:
        yield factory


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def ids() -> SequentialIds:
    return SequentialIds()


@pytest.fixture
def make(ids: SequentialIds, clock: FixedClock) -> Make:
    return Make(ids, clock)

"""The fixture every contract test takes: ``uow_factory``, a fresh and empty store of each
adapter on the test's movable ``clock``. A new adapter (PostgreSQL) joins the suite with
one entry in ADAPTERS."""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import AsyncIterator, Callable

import pytest

from adapters.sqlite import SqliteDatabase
from core.ports.clock import Clock
from core.ports.unit_of_work import UnitOfWorkFactory
from tests.contract.builders import START, Make
from tests.fakes import FixedClock, InMemoryDatabase, SequentialIds


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


ADAPTERS: dict[str, Callable[[pathlib.Path, Clock], contextlib.AbstractAsyncContextManager[UnitOfWorkFactory]]] = {
    "memory": _memory,
    "sqlite": _sqlite,
}


@pytest.fixture(params=list(ADAPTERS))
async def uow_factory(
    request: pytest.FixtureRequest, tmp_path: pathlib.Path, clock: FixedClock
) -> AsyncIterator[UnitOfWorkFactory]:
    async with ADAPTERS[request.param](tmp_path, clock) as factory:
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

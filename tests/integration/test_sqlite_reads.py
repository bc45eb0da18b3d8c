"""Reads on SQLite: the time budget of a read on the event loop, slow units in their own
thread, and the pool of reader connections (what every adapter must do is in
tests/contract/test_unit_of_work.py; this is how SQLite does it)."""

from __future__ import annotations

import asyncio
import pathlib
import threading
import time
from collections.abc import AsyncIterator, Callable

import pytest

from adapters.sqlite import SqliteDatabase
from adapters.sqlite.database import LOOP_READERS, SLOW_READERS
from core.domain.catalog import Product
from core.domain.errors import QueryTimedOut, Unavailable
from core.domain.money import Money
from tests.fakes import FixedClock

CLOCK = FixedClock()
#: Counts for ever: only an interrupt ends it.
ENDLESS = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) SELECT count(*) FROM c"


async def until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        await asyncio.sleep(0.005)


def lamp() -> Product:
    return Product(
        id="prd_000001",
        sku="LAMP-1",
        name="Lamp",
        description="",
        price=Money(1000, "USD"),
        stock=3,
        active=True,
        created_at=CLOCK.now(),
        updated_at=CLOCK.now(),
    )


@pytest.fixture
async def db(tmp_path: pathlib.Path) -> AsyncIterator[SqliteDatabase]:
    database = SqliteDatabase(tmp_path / "tillbox.db", clock=CLOCK, read_budget_ms=50, slow_read_budget_ms=150)
    await database.open()
    async with database() as uow:
        await uow.products.add(lamp())
        await uow.commit()
    yield database
    await database.close()


@pytest.mark.parametrize(("slow", "budget_ms"), [(False, 50), (True, 150)], ids=["on_the_loop", "slow"])
async def test_a_read_past_its_budget_is_stopped_and_the_unit_goes_on(
    db: SqliteDatabase, slow: bool, budget_ms: int
) -> None:
    async with db(readonly=True, slow=slow) as uow:
        with pytest.raises(QueryTimedOut) as caught:
            await uow.session.fetchall(ENDLESS)
        assert (caught.value.code, caught.value.details) == ("query_timeout", {"budget_ms": budget_ms})
        assert await uow.products.get("prd_000001") == lamp()  # the unit, its snapshot, its reader: all fine
    async with db(readonly=True, slow=slow) as uow:
        assert await uow.products.get("prd_000001") == lamp()


async def test_a_slow_units_reads_run_off_the_loop(db: SqliteDatabase) -> None:
    entered, release = threading.Event(), threading.Event()

    def gate() -> int:  # runs where the statement runs
        entered.set()
        release.wait(timeout=30)
        return 1

    async with db(readonly=True, slow=True) as uow:
        assert uow._slow_reader is not None
        await uow._slow_reader.conn.create_function("gate", 0, gate)
        statement = asyncio.create_task(uow.session.fetchall("SELECT gate()"))
        await until(entered.is_set)  # the statement waits in its thread ...
        async with db(readonly=True) as other:  # ... and the loop serves another unit meanwhile
            assert await other.products.get("prd_000001") == lamp()
        assert not statement.done()
        release.set()
        assert await statement == [(1,)]


async def test_a_slow_unit_cancelled_mid_read_gives_its_reader_up_and_the_next_gets_a_clean_one(
    db: SqliteDatabase,
) -> None:
    entered = threading.Event()

    async def read_endlessly() -> None:
        async with db(readonly=True, slow=True) as uow:
            assert uow._slow_reader is not None
            await uow._slow_reader.conn.create_function("mark", 0, lambda: entered.set() or 1)
            await uow.session.fetchall(ENDLESS.replace("SELECT 1 UNION", "SELECT mark() UNION"))

    task = asyncio.create_task(read_endlessly())
    await until(entered.is_set)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(SLOW_READERS + 1):
        async with db(readonly=True, slow=True) as uow:
            assert await uow.products.get("prd_000001") == lamp()


async def test_units_beyond_the_pool_wait_for_a_reader_and_get_one(db: SqliteDatabase) -> None:
    go = asyncio.Event()
    reading = 0

    async def hold() -> Product | None:
        nonlocal reading
        async with db(readonly=True) as uow:
            product = await uow.products.get("prd_000001")
            reading += 1
            await go.wait()  # holds its reader (and its snapshot) across an await
            assert await uow.products.get("prd_000001") == product
            return product

    units = [asyncio.create_task(hold()) for _ in range(LOOP_READERS + 3)]
    await until(lambda: reading >= LOOP_READERS)
    assert reading == LOOP_READERS  # the rest wait for a reader
    go.set()
    assert await asyncio.gather(*units) == [lamp()] * (LOOP_READERS + 3)


async def test_read_units_need_an_open_database_and_their_readers_close_when_they_end(
    tmp_path: pathlib.Path,
) -> None:
    database = SqliteDatabase(tmp_path / "tillbox.db", clock=CLOCK)
    for slow in (False, True):  # nor before it opens (which would create the file)
        with pytest.raises(Unavailable, match="not open"):
            async with database(readonly=True, slow=slow):
                pass
    assert not (tmp_path / "tillbox.db").exists()
    await database.open()
    async with database(readonly=True) as reader, database(readonly=True, slow=True) as slow:
        await reader.products.get("x")
        await slow.products.get("x")
        await database.close()
        assert await reader.products.get("x") is None  # its snapshot lives until its block ends
    for slow in (False, True):
        with pytest.raises(Unavailable, match="not open"):
            async with database(readonly=True, slow=slow):
                pass

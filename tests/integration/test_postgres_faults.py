"""The PostgreSQL store when things go wrong: a connection the server ends mid-unit, a unit
cancelled (twice) while it runs or rolls back, text PostgreSQL cannot hold, words longer
than a lexeme, cursors edited to hold impossible times, a corrupt signing-key row."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from adapters import cursors
from adapters.postgres import PostgresDatabase
from adapters.postgres.shared import PostgresSigningKeys
from core.domain.errors import InvalidCursor, Unavailable, ValidationFailed
from core.domain.pagination import PageRequest
from core.ports.repositories import ProductFilter, ProductSort
from tests.contract.builders import Make, store
from tests.fakes import FixedClock, SequentialIds
from tests.postgres import emptied_stores

pytestmark = pytest.mark.postgres


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
def make(clock: FixedClock) -> Make:
    return Make(SequentialIds(), clock)


@pytest.fixture
async def db(postgres_url: str, clock: FixedClock) -> AsyncIterator[PostgresDatabase]:
    async with emptied_stores(postgres_url, clock, pool_max=2, read_budget_ms=5000) as (database,):
        yield database


async def test_a_connection_the_server_ends_mid_unit_is_unavailable_and_the_pool_recovers(
    db: PostgresDatabase, make: Make
) -> None:
    await store(db, make.product("A-1"))

    async def ended_mid_unit() -> None:
        async with db(readonly=True) as uow:
            pid = await uow.products._session.fetchval("SELECT pg_backend_pid()")
            await db.fetchval("SELECT pg_terminate_backend($1)", pid)
            await uow.products.list(PageRequest(), ProductFilter())

    with pytest.raises(Unavailable) as caught:
        await ended_mid_unit()
    assert caught.value.code == "database_unavailable"
    for _ in range(3):  # as many units as the pool has connections, and more: none was lost
        async with db(readonly=True) as uow:
            assert len((await uow.products.list(PageRequest(), ProductFilter())).items) == 1


async def test_units_cancelled_while_they_run_and_while_they_roll_back_leave_no_connection_behind(
    db: PostgresDatabase,
) -> None:
    started = asyncio.Event()

    async def slow_unit() -> None:
        async with db() as uow:
            started.set()
            await uow.products._session.fetchval("SELECT pg_sleep(5)")

    for _ in range(3):
        started.clear()
        task = asyncio.create_task(slow_unit())
        await started.wait()
        await asyncio.sleep(0)
        task.cancel()  # during the statement
        await asyncio.sleep(0)
        task.cancel()  # and again, during the rollback
        with pytest.raises(asyncio.CancelledError):
            await task
    async with asyncio.timeout(10):  # both of the pool's connections are free again
        async with db() as first, db() as second:
            assert await first.products.get("prd_none") is None
            assert await second.products.get("prd_none") is None


async def test_text_postgresql_cannot_hold_is_a_validation_error_not_a_crash(db: PostgresDatabase, make: Make) -> None:
    with pytest.raises(ValidationFailed):
        await store(db, make.product("NUL-1", description="before\x00after"))
    async with db(readonly=True) as uow:
        assert (await uow.products.list(PageRequest(), ProductFilter())).items == []


async def test_a_word_longer_than_a_lexeme_is_kept_out_of_the_index_only(db: PostgresDatabase, make: Make) -> None:
    long_word = "東" * 700  # one FTS5 token of 2,100 bytes: PostgreSQL's lexemes stop at 2,047
    product = make.product("CJK-1", name="Lantern", description=long_word)
    await store(db, product)
    async with db(readonly=True) as uow:
        assert [p.sku for p in (await uow.products.list(PageRequest(), ProductFilter(text="lantern"))).items] == [
            "CJK-1"
        ]
        stored = await uow.products.get(product.id)
    assert stored is not None
    assert stored.description == long_word


@pytest.mark.parametrize(
    "at",
    [
        "0001-01-01T00:00:00+01:00",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "2026-01-01T00:00:00",
        "2026-01-01",
        "2026-01-01T00:00:00+05:00",
        "not a time",
    ],
)
async def test_an_edited_cursor_with_an_impossible_time_is_invalid_not_a_crash(
    db: PostgresDatabase, make: Make, at: str
) -> None:
    await store(db, make.product("A-1"), make.product("B-1"))
    for sort in (ProductSort.CREATED_AT, ProductSort.CREATED_AT_DESC):
        bound_to = cursors.binding("products", sort.value, None, None, None, None)
        forged = cursors.encode(bound_to, [at, "prd_000000000001"])
        async with db(readonly=True) as uow:
            with pytest.raises(InvalidCursor):
                await uow.products.list(PageRequest(limit=1, after=forged), ProductFilter(), sort)


async def test_a_key_row_with_a_time_without_offset_is_ignored_and_the_refresh_goes_on(
    db: PostgresDatabase, clock: FixedClock
) -> None:
    keys = PostgresSigningKeys(db, clock=clock)
    await keys.open()
    try:
        good = keys.signing_key()[0]
        [document] = [json.loads(row[0]) for row in await db.fetch("SELECT document FROM signing_keys")]
        document = {**document, "kid": "naive", "created_at": "2026-01-01T00:00:00"}
        await db.fetchval(
            "INSERT INTO signing_keys (kid, created_at, document) VALUES ('naive', now(), $1) RETURNING 1",
            json.dumps(document),
        )
        await keys.refresh()
        assert keys.signing_key()[0] == good
        other = PostgresSigningKeys(db, clock=clock)  # another instance still starts
        await other.open()
        await other.close()
    finally:
        await keys.close()

"""Two instances on one PostgreSQL store: each hears of the other's commits (the change
counter), through notifications sent after the commits, outside their transactions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from adapters.postgres import PostgresDatabase
from tests.contract.builders import START, Make
from tests.fakes import FixedClock, SequentialIds
from tests.harness import until_async
from tests.postgres import truncate_all

pytestmark = pytest.mark.postgres


@pytest.fixture
async def two(postgres_url: str) -> AsyncIterator[tuple[PostgresDatabase, PostgresDatabase]]:
    await truncate_all(postgres_url)
    clock = FixedClock(START)
    first, second = (PostgresDatabase(postgres_url, clock=clock, pool_min=1, pool_max=4) for _ in range(2))
    await first.open()
    await second.open()
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


@pytest.fixture
def make() -> Make:
    return Make(SequentialIds(), FixedClock(START))


async def test_a_commit_of_one_instance_moves_the_change_counter_of_the_other(
    two: tuple[PostgresDatabase, PostgresDatabase], make: Make
) -> None:
    first, second = two
    before = second.change_counter()
    async with first() as uow:
        await uow.products.add(make.product("LAMP-1"))
        await uow.commit()
    await until_async(
        lambda: asyncio.sleep(0, result=second.change_counter() != before), timeout=5, what="the other instance hears"
    )


async def test_closing_announces_the_last_commits(postgres_url: str, make: Make) -> None:
    await truncate_all(postgres_url)
    clock = FixedClock(START)
    listener = PostgresDatabase(postgres_url, clock=clock, pool_min=1, pool_max=2)
    writer = PostgresDatabase(postgres_url, clock=clock, pool_min=1, pool_max=2)
    await listener.open()
    await writer.open()
    try:
        heard = listener.stats.notifications
        async with writer() as uow:
            await uow.products.add(make.product("LAMP-1"))
            await uow.commit()
        await writer.close()  # at once: the announcement may not have left yet
        await until_async(
            lambda: asyncio.sleep(0, result=listener.stats.notifications > heard), timeout=5, what="heard"
        )
    finally:
        await writer.close()
        await listener.close()

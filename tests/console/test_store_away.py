"""The store going away while the console is open (PostgreSQL's backends cut, as a restart
or a failover cuts them): a read says so in one line, the console stays up, and the next
read, once the store answers again, shows the rows."""

from __future__ import annotations

import asyncpg
import pytest

from entrypoints.console.screens.products import ProductsScreen
from tests.console.conftest import Shop, running, signed_in
from tests.console.driving import notices, open_area, pressed_and_read

pytestmark = pytest.mark.parametrize(
    "console_store", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


async def cut_every_connection(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    finally:
        await conn.close()


async def test_a_read_while_the_database_is_cut_is_said_and_the_next_one_shows_the_rows(
    shop: Shop, console_store: str
) -> None:
    from core.domain.users import Actor
    from core.services.catalog import CreateProduct

    await shop.services.catalog.create_product(
        CreateProduct(actor=Actor.operator(), sku="AWAY-1", name="Away lamp", price=1000, stock=3)
    )
    app = shop.console()
    async with running(app) as pilot:
        await signed_in(pilot, "staff@example.com")
        screen = await open_area(pilot, "p", ProductsScreen)
        assert [p.sku for p in screen.items] == ["AWAY-1"]
        assert await cut_every_connection(console_store) > 0
        # Read again until a read goes through: one that meets a cut connection is a notice
        # naming the database, never a traceback, and the console keeps running.
        for _ in range(20):
            before = len(notices(pilot))
            await pressed_and_read(pilot, screen, "r")
            said_now = notices(pilot)[before:]
            assert all("database" in notice.lower() for notice in said_now), said_now
            if not said_now:
                break
        else:
            pytest.fail(f"no read went through after the cut: {notices(pilot)}")
        assert app.is_running and [p.sku for p in screen.items] == ["AWAY-1"]

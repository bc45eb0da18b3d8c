"""The in-memory unit of work keeps the port's promise that unit tests rely on:
only what was committed is kept. (The contract suite checks the rest of the fake.)"""

from __future__ import annotations

from datetime import UTC, datetime

from core.domain.catalog import Product
from core.domain.money import Money
from core.domain.users import RefreshToken
from tests.fakes import FixedClock, InMemoryDatabase

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _product(n: int) -> Product:
    return Product(
        id=f"prd_{n}",
        sku=f"SKU-{n}",
        name="Thing",
        description="",
        price=Money(100, "USD"),
        stock=0,
        active=True,
        created_at=T0,
        updated_at=T0,
    )


async def test_leaving_without_commit_keeps_nothing() -> None:
    db = InMemoryDatabase(FixedClock(T0))
    async with db() as uow:
        await uow.products.add(_product(1))

    assert db.store.products == {}


async def test_writes_after_a_commit_need_another_commit() -> None:
    db = InMemoryDatabase(FixedClock(T0))
    async with db() as uow:
        await uow.products.add(_product(1))
        await uow.commit()
        await uow.products.add(_product(2))
        assert await uow.products.get("prd_2") == _product(2)  # the unit of work sees its own write

    assert sorted(db.store.products) == ["prd_1"]

    async with db() as uow:
        await uow.products.add(_product(3))
        await uow.commit()
        await uow.products.add(_product(4))
        await uow.commit()

    assert sorted(db.store.products) == ["prd_1", "prd_3", "prd_4"]


async def test_refresh_token_writes_after_a_commit_need_another_commit() -> None:
    db = InMemoryDatabase(FixedClock(T0))
    token = RefreshToken(id="rtk_1", user_id="usr_1", family_id="fam_1", token_digest="d", created_at=T0, expires_at=T0)
    async with db() as uow:
        await uow.refresh_tokens.add(token)
        await uow.commit()
        assert await uow.refresh_tokens.mark_used("rtk_1", T0) is True

    assert db.store.refresh_tokens["rtk_1"].used_at is None

"""UnitOfWork: what a use case may rely on, whichever adapter is behind it
(see core/ports/unit_of_work.py)."""

from __future__ import annotations

import asyncio

import pytest

from core.domain.audit import AuditEntry
from core.domain.catalog import Product
from core.domain.errors import SkuTaken
from core.domain.pagination import PageRequest
from core.ports.repositories import AuditFilter, ProductFilter
from core.ports.unit_of_work import UnitOfWork, UnitOfWorkFactory
from tests.contract.builders import Make, store
from tests.fakes import FixedClock


class Boom(Exception):
    pass


async def _skus(uow_factory: UnitOfWorkFactory) -> list[str]:
    async with uow_factory(readonly=True) as uow:
        return [p.sku for p in (await uow.products.list(PageRequest(limit=100), ProductFilter())).items]


async def _audit(uow_factory: UnitOfWorkFactory) -> list[AuditEntry]:
    async with uow_factory(readonly=True) as uow:
        return (await uow.audit.list(PageRequest(limit=100), AuditFilter())).items


async def test_a_commit_is_visible_to_the_next_read_only_unit(uow_factory: UnitOfWorkFactory, make: Make) -> None:
    lamp = make.product("LAMP-1")
    async with uow_factory() as uow:
        await uow.products.add(lamp)
        await uow.commit()
        async with uow_factory(readonly=True) as reader:  # even before the writer's block ends
            assert await reader.products.get(lamp.id) == lamp

    async with uow_factory(readonly=True) as uow:
        assert await uow.products.get(lamp.id) == lamp


async def test_a_unit_sees_its_own_writes_and_no_one_else_does_before_commit(
    uow_factory: UnitOfWorkFactory, make: Make
) -> None:
    lamp = make.product("LAMP-1")
    async with uow_factory() as uow:
        await uow.products.add(lamp)
        assert await uow.products.get(lamp.id) == lamp
        async with uow_factory(readonly=True) as reader:
            assert await reader.products.get(lamp.id) is None
            assert (await reader.products.list(PageRequest(), ProductFilter(text="widget"))).items == []
        await uow.commit()

    assert await _skus(uow_factory) == ["LAMP-1"]


async def test_leaving_without_commit_keeps_nothing(uow_factory: UnitOfWorkFactory, make: Make) -> None:
    async with uow_factory() as uow:
        await uow.products.add(make.product("LAMP-1"))
        await uow.audit.append(make.audit_entry("product.created"))

    assert await _skus(uow_factory) == []
    assert await _audit(uow_factory) == []


async def test_an_exception_rolls_everything_back_and_propagates(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock
) -> None:
    lamp = make.product("LAMP-1", stock=5)
    await store(uow_factory, lamp)

    async def half_done() -> None:
        async with uow_factory() as uow:
            product = await uow.products.get(lamp.id)
            assert product is not None
            product.adjust_stock(-2, at=clock.now())
            await uow.products.update(product)
            await uow.products.add(make.product("CHAIR-1"))
            await uow.audit.append(make.audit_entry("product.stock_adjusted"))
            raise Boom()

    with pytest.raises(Boom):
        await half_done()

    async with uow_factory(readonly=True) as uow:
        assert await uow.products.get(lamp.id) == lamp
    assert await _skus(uow_factory) == ["LAMP-1"]
    assert await _audit(uow_factory) == []


async def test_a_refused_write_does_not_undo_the_rest_of_the_unit(uow_factory: UnitOfWorkFactory, make: Make) -> None:
    await store(uow_factory, make.product("LAMP-1"))

    async with uow_factory() as uow:
        await uow.products.add(make.product("CHAIR-1"))
        with pytest.raises(SkuTaken):
            await uow.products.add(make.product("LAMP-1"))
        await uow.products.add(make.product("TABLE-1"))
        await uow.commit()

    assert await _skus(uow_factory) == ["LAMP-1", "CHAIR-1", "TABLE-1"]


async def test_writes_after_a_commit_need_another_commit(uow_factory: UnitOfWorkFactory, make: Make) -> None:
    async with uow_factory() as uow:
        await uow.products.add(make.product("A"))
        await uow.commit()
        await uow.products.add(make.product("B"))
        assert (await uow.products.get_by_sku("B")) is not None
    assert await _skus(uow_factory) == ["A"]

    async with uow_factory() as uow:
        await uow.products.add(make.product("C"))
        await uow.commit()
        await uow.products.add(make.product("D"))
        await uow.commit()
    assert await _skus(uow_factory) == ["A", "C", "D"]


async def test_commit_in_a_read_only_unit_is_a_programming_error(uow_factory: UnitOfWorkFactory) -> None:
    async with uow_factory(readonly=True) as uow:
        with pytest.raises(RuntimeError):
            await uow.commit()


async def test_concurrent_units_are_isolated_and_all_land(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock
) -> None:
    lamp = make.product("LAMP-1", stock=0)
    await store(uow_factory, lamp)

    async def add_one(n: int) -> None:
        async with uow_factory() as uow:
            product = await uow.products.get(lamp.id)
            assert product is not None
            await asyncio.sleep(0)  # let the others run: none of them may see this half-done unit
            product.adjust_stock(+1, at=clock.now())
            await uow.products.update(product)  # a lost update would be a ConcurrentUpdate here
            await uow.audit.append(make.audit_entry("product.stock_adjusted", details={"n": n}))
            await uow.commit()

    await asyncio.gather(*(add_one(n) for n in range(50)))

    async with uow_factory(readonly=True) as uow:
        product = await uow.products.get(lamp.id)
    assert product is not None
    assert (product.stock, product.version) == (50, 51)
    assert sorted(e.details["n"] for e in await _audit(uow_factory)) == list(range(50))


async def test_failing_units_do_not_take_down_the_others_running_with_them(
    uow_factory: UnitOfWorkFactory, make: Make
) -> None:
    await store(uow_factory, make.product("TAKEN"))
    products = [make.product(f"SKU-{n:02d}") for n in range(30)]

    async def write(n: int, product: Product) -> None:
        async with uow_factory() as uow:
            await uow.products.add(product)
            await uow.audit.append(make.audit_entry("product.created", object_id=product.id))
            if n % 3 == 1:
                raise Boom()
            if n % 3 == 2:
                await uow.products.add(make.product("TAKEN"))  # refused by the store
            await uow.commit()

    outcomes = await asyncio.gather(*(write(n, p) for n, p in enumerate(products)), return_exceptions=True)

    assert [type(o).__name__ for o in outcomes] == [["NoneType", "Boom", "SkuTaken"][n % 3] for n in range(30)]
    landed = [p for n, p in enumerate(products) if n % 3 == 0]
    assert await _skus(uow_factory) == ["TAKEN"] + [p.sku for p in landed]
    assert sorted(e.object_id for e in await _audit(uow_factory)) == [p.id for p in landed]


async def test_of_concurrent_units_adding_one_sku_exactly_one_wins(uow_factory: UnitOfWorkFactory, make: Make) -> None:
    contenders = [make.product("LAMP-1", name=f"Lamp {n}") for n in range(10)]

    async def add(product: Product) -> None:
        async with uow_factory() as uow:
            await uow.products.add(product)
            await uow.commit()

    outcomes = await asyncio.gather(*(add(p) for p in contenders), return_exceptions=True)

    winners = [p for p, o in zip(contenders, outcomes, strict=True) if o is None]
    assert len(winners) == 1
    assert [type(o) for o in outcomes if o is not None] == [SkuTaken] * 9
    async with uow_factory(readonly=True) as uow:
        assert await uow.products.get_by_sku("LAMP-1") == winners[0]


async def test_the_change_counter_moves_with_commits_only(uow_factory: UnitOfWorkFactory, make: Make) -> None:
    first = uow_factory.change_counter()
    async with uow_factory(readonly=True) as uow:
        await uow.products.list(PageRequest(), ProductFilter())
    assert uow_factory.change_counter() == first
    async with uow_factory() as uow:
        await uow.products.add(make.product("CC-1"))
        # leaving without commit: rolled back
    assert uow_factory.change_counter() == first
    await store(uow_factory, make.product("CC-2"))
    second = uow_factory.change_counter()
    assert second != first
    assert uow_factory.change_counter() == second


# Read-only units read one snapshot.
@pytest.mark.parametrize("slow", [False, True], ids=["read", "slow_read"])
async def test_a_read_only_unit_reads_one_snapshot_while_a_write_commits(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock, slow: bool
) -> None:
    lamp = make.product("LAMP-1", stock=5)
    await store(uow_factory, lamp, make.audit_entry("product.created"))

    async with uow_factory(readonly=True, slow=slow) as reader:
        before = await reader.products.get(lamp.id)
        skus_before = [p.sku for p in (await reader.products.list(PageRequest(), ProductFilter())).items]
        async with uow_factory() as writer:  # commits in between the reader's reads
            product = await writer.products.get(lamp.id)
            assert product is not None
            product.adjust_stock(+10, at=clock.now())
            await writer.products.update(product)
            await writer.products.add(make.product("CHAIR-1"))
            await writer.audit.append(make.audit_entry("product.stock_adjusted"))
            await writer.commit()
        assert await reader.products.get(lamp.id) == before == lamp
        assert [p.sku for p in (await reader.products.list(PageRequest(), ProductFilter())).items] == skus_before
        assert await reader.products.get_by_sku("CHAIR-1") is None
        assert [e.action for e in (await reader.audit.list(PageRequest(), AuditFilter())).items] == ["product.created"]

    async with uow_factory(readonly=True, slow=slow) as after:  # the next unit sees it all
        stored = await after.products.get(lamp.id)
        assert stored is not None and stored.stock == 15
        assert await after.products.get_by_sku("CHAIR-1") is not None


async def test_read_only_units_open_at_once_each_keep_their_own_snapshot(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock
) -> None:
    lamp = make.product("LAMP-1", stock=0)
    await store(uow_factory, lamp)

    async def add_stock() -> None:
        async with uow_factory() as writer:
            product = await writer.products.get(lamp.id)
            assert product is not None
            product.adjust_stock(+1, at=clock.now())
            await writer.products.update(product)
            await writer.commit()

    async def stock(uow: UnitOfWork) -> int:
        product = await uow.products.get(lamp.id)
        assert product is not None
        return product.stock

    async with uow_factory(readonly=True) as first:
        assert await stock(first) == 0
        await add_stock()
        async with uow_factory(readonly=True, slow=True) as second:
            assert await stock(second) == 1
            await add_stock()
            async with uow_factory(readonly=True) as third:
                assert await stock(third) == 2
                await add_stock()
                assert (await stock(first), await stock(second), await stock(third)) == (0, 1, 2)
    async with uow_factory(readonly=True) as last:
        assert await stock(last) == 3


async def test_a_unit_that_may_be_slow_is_read_only(uow_factory: UnitOfWorkFactory) -> None:
    with pytest.raises(ValueError, match="read-only"):
        uow_factory(slow=True)
    async with uow_factory(readonly=True, slow=True) as uow:
        with pytest.raises(RuntimeError):
            await uow.commit()


# Rows a write unit reads are its own until it ends (UnitOfWorkFactory).
async def test_write_units_that_read_and_save_one_product_at_once_lose_no_update(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock
) -> None:
    lamp = make.product("LAMP-1", stock=0)
    await store(uow_factory, lamp)

    async def add_one() -> None:
        async with uow_factory() as uow:
            product = await uow.products.get(lamp.id)
            assert product is not None
            await asyncio.sleep(0)  # let the others read meanwhile, where the store lets them
            product.adjust_stock(+1, at=clock.now())
            await uow.products.update(product)
            await uow.commit()

    await asyncio.gather(*(add_one() for _ in range(10)))

    async with uow_factory(readonly=True) as uow:
        stored = await uow.products.get(lamp.id)
    assert stored is not None
    assert (stored.stock, stored.version) == (10, 11)


async def test_a_write_unit_sees_a_unit_that_committed_before_it(uow_factory: UnitOfWorkFactory, make: Make) -> None:
    """(A store that commits in groups also shows a write unit the units of the open group,
    whose commit() has not returned yet: tests/integration/test_sqlite_database.py.)"""
    lamp = make.product("LAMP-1")
    await store(uow_factory, lamp)
    async with uow_factory() as reader:  # a write unit, left without commit
        assert await reader.products.get(lamp.id) == lamp

"""IdempotencyRepository and the claim a unit of work records at commit (see
core/ports/idempotency.py): every adapter stamps claims by the store's clock, so that a
key lives exactly KEY_LIFETIME by the clock that also expires it."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from core.domain.pagination import PageRequest
from core.ports.idempotency import KEY_LIFETIME, IdempotencyClaim, IdempotencyKeyTaken, StoredRequest, current_claim
from core.ports.repositories import ProductFilter
from core.ports.unit_of_work import UnitOfWorkFactory
from tests.contract.builders import START, Make
from tests.fakes import FixedClock

SCOPE = "user:usr_000000000099"


async def _add_under(uow_factory: UnitOfWorkFactory, make: Make, sku: str, claim: IdempotencyClaim) -> None:
    """Add a product in a unit that commits while ``claim`` is current, as a request with a key does."""
    token = current_claim.set(claim)
    try:
        async with uow_factory() as uow:
            await uow.products.add(make.product(sku))
            await uow.commit()
    finally:
        current_claim.reset(token)


async def _skus(uow_factory: UnitOfWorkFactory) -> list[str]:
    async with uow_factory(readonly=True) as uow:
        return [p.sku for p in (await uow.products.list(PageRequest(limit=100), ProductFilter())).items]


async def _stored(uow_factory: UnitOfWorkFactory, key: str) -> StoredRequest | None:
    async with uow_factory(readonly=True) as uow:
        return await uow.idempotency.get(SCOPE, key)


async def test_a_claim_is_stamped_by_the_stores_clock_and_expires_by_it(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock
) -> None:
    claim = IdempotencyClaim(scope=SCOPE, key="k-1", fingerprint="first")
    await _add_under(uow_factory, make, "A", claim)
    assert await _stored(uow_factory, "k-1") == StoredRequest(
        scope=SCOPE, key="k-1", fingerprint="first", created_at=START
    )

    clock.advance(hours=23, minutes=59)  # within the lifetime, by the store's clock: still held
    claim = IdempotencyClaim(scope=SCOPE, key="k-1", fingerprint="second")
    with pytest.raises(IdempotencyKeyTaken):
        await _add_under(uow_factory, make, "B", claim)
    assert await _skus(uow_factory) == ["A"]

    clock.advance(minutes=2)  # past it: the key is free, and stamped anew
    claim = IdempotencyClaim(scope=SCOPE, key="k-1", fingerprint="third")
    await _add_under(uow_factory, make, "C", claim)
    assert await _skus(uow_factory) == ["A", "C"]
    assert await _stored(uow_factory, "k-1") == StoredRequest(
        scope=SCOPE, key="k-1", fingerprint="third", created_at=clock.now()
    )


async def test_purge_forgets_the_claims_recorded_before_the_time(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock
) -> None:
    claim = IdempotencyClaim(scope=SCOPE, key="old", fingerprint="f")
    await _add_under(uow_factory, make, "A", claim)
    clock.advance(hours=1)
    claim = IdempotencyClaim(scope=SCOPE, key="new", fingerprint="f")
    await _add_under(uow_factory, make, "B", claim)

    async with uow_factory() as uow:
        assert await uow.idempotency.purge(clock.now(), 10) == 1  # "new" was stamped at now: not before it
        await uow.commit()

    assert await _stored(uow_factory, "old") is None
    assert (await _stored(uow_factory, "new")) == StoredRequest(
        scope=SCOPE, key="new", fingerprint="f", created_at=clock.now()
    )


async def test_purge_takes_at_most_a_batch_oldest_first(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock
) -> None:
    for n in range(5):
        await _add_under(uow_factory, make, f"P{n}", IdempotencyClaim(scope=SCOPE, key=f"k-{n}", fingerprint="f"))
        clock.advance(minutes=1)
    batches = []
    for _ in range(3):
        async with uow_factory() as uow:
            batches.append(await uow.idempotency.purge(clock.now(), 2))
            await uow.commit()
    assert batches == [2, 2, 1]
    assert [await _stored(uow_factory, f"k-{n}") for n in range(5)] == [None] * 5


async def test_claim_records_a_free_key_and_refuses_a_held_one(
    uow_factory: UnitOfWorkFactory, clock: FixedClock
) -> None:
    now = clock.now()
    async with uow_factory() as uow:
        first = IdempotencyClaim(scope=SCOPE, key="k-d", fingerprint="one")
        assert await uow.idempotency.claim(first, now, now - KEY_LIFETIME) is True
        again = IdempotencyClaim(scope=SCOPE, key="k-d", fingerprint="two")
        assert await uow.idempotency.claim(again, now, now - KEY_LIFETIME) is False
        await uow.commit()
    assert await _stored(uow_factory, "k-d") == StoredRequest(scope=SCOPE, key="k-d", fingerprint="one", created_at=now)

    later = now + KEY_LIFETIME + timedelta(seconds=1)
    async with uow_factory() as uow:  # past its lifetime: replaced, and its response forgotten
        await uow.idempotency.complete(SCOPE, "k-d", 201, {}, b"{}")
        third = IdempotencyClaim(scope=SCOPE, key="k-d", fingerprint="three")
        assert await uow.idempotency.claim(third, later, later - KEY_LIFETIME) is True
        await uow.commit()
    assert await _stored(uow_factory, "k-d") == StoredRequest(
        scope=SCOPE, key="k-d", fingerprint="three", created_at=later
    )


async def test_of_two_units_claiming_one_key_at_once_one_wins(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock
) -> None:
    async def contend(n: int) -> None:
        await _add_under(uow_factory, make, f"SKU-{n}", IdempotencyClaim(scope=SCOPE, key="k-race", fingerprint="f"))

    outcomes = await asyncio.gather(*(contend(n) for n in range(8)), return_exceptions=True)

    assert sum(o is None for o in outcomes) == 1
    assert [type(o) for o in outcomes if o is not None] == [IdempotencyKeyTaken] * 7
    assert len(await _skus(uow_factory)) == 1

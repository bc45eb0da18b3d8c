"""Outbox and ProviderEvents: every adapter behaves the same (see core/ports/repositories.py)."""

from __future__ import annotations

from datetime import timedelta

from core.ports.unit_of_work import UnitOfWorkFactory
from tests.contract.builders import Make, store
from tests.fakes import FixedClock


async def test_an_event_reads_back_exactly_as_appended(uow_factory: UnitOfWorkFactory, make: Make) -> None:
    payload = {
        "id": "ord_1",
        "status": "paid",
        "total": 2400,
        "currency": "USD",
        "items": [{"sku": "MUG-1", "name": "Café mug ☕", "quantity": 2}],
        "expires_at": None,
        "flag": True,
    }
    event = make.event("order.paid", payload=payload)
    await store(uow_factory, event)

    async with uow_factory(readonly=True) as uow:
        assert await uow.outbox.list_pending(10) == [event]


async def test_pending_events_are_oldest_first_until_delivered(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock
) -> None:
    events = [make.event(f"order.e{n}", aggregate_id=f"ord_{n}") for n in range(5)]
    await store(uow_factory, *reversed(events))

    async with uow_factory() as uow:
        assert await uow.outbox.list_pending(3) == events[:3]
        assert await uow.outbox.mark_delivered(events[1].id, clock.now()) is True
        assert await uow.outbox.mark_delivered(events[1].id, clock.now()) is False  # once
        assert await uow.outbox.mark_delivered("evt_nothing", clock.now()) is False
        assert await uow.outbox.mark_delivered(events[3].id, clock.now()) is True
        await uow.commit()

    async with uow_factory(readonly=True) as uow:
        assert await uow.outbox.list_pending(10) == [events[0], events[2], events[4]]
        assert await uow.outbox.list_pending(1) == [events[0]]


async def test_events_left_without_commit_are_not_there(uow_factory: UnitOfWorkFactory, make: Make) -> None:
    async with uow_factory() as uow:
        await uow.outbox.append(make.event())
        # leaving without commit
    async with uow_factory(readonly=True) as uow:
        assert await uow.outbox.list_pending(10) == []


# Provider events.
async def test_a_provider_event_is_new_once(uow_factory: UnitOfWorkFactory, clock: FixedClock) -> None:
    async with uow_factory() as uow:
        assert await uow.provider_events.record("stripe", "evt_1", clock.now()) is True
        assert await uow.provider_events.record("stripe", "evt_1", clock.now()) is False  # within the unit
        assert await uow.provider_events.record("stripe", "evt_2", clock.now()) is True
        assert await uow.provider_events.record("other", "evt_1", clock.now()) is True  # ids are per provider
        await uow.commit()

    async with uow_factory() as uow:
        later = clock.now() + timedelta(days=3)
        assert await uow.provider_events.record("stripe", "evt_1", later) is False
        assert await uow.provider_events.record("stripe", "evt_2", later) is False
        assert await uow.provider_events.record("stripe", "EVT_1", later) is True  # exact ids
        await uow.commit()


async def test_a_provider_event_recorded_in_a_unit_left_without_commit_was_never_seen(
    uow_factory: UnitOfWorkFactory, clock: FixedClock
) -> None:
    async with uow_factory() as uow:
        assert await uow.provider_events.record("stripe", "evt_1", clock.now()) is True
        # leaving without commit

    async with uow_factory() as uow:
        assert await uow.provider_events.record("stripe", "evt_1", clock.now()) is True
        await uow.commit()


# Purging.
async def test_purge_deletes_what_is_past_keeping_a_batch_at_a_time(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock
) -> None:
    start = clock.now()
    delivered_early = make.event("order.a")
    never_delivered = make.event("order.b")
    delivered_late = make.event("order.c")
    clock.advance(days=2)
    delivered_soon = make.event("order.e")
    undelivered_soon = make.event("order.f")
    clock.advance(days=4)
    recent = make.event("order.d")
    await store(uow_factory, delivered_early, never_delivered, delivered_late, delivered_soon, undelivered_soon, recent)
    async with uow_factory() as uow:
        assert await uow.outbox.mark_delivered(delivered_early.id, start + timedelta(days=1))
        assert await uow.outbox.mark_delivered(delivered_late.id, start + timedelta(days=6))
        assert await uow.outbox.mark_delivered(delivered_soon.id, start + timedelta(days=3))
        await uow.commit()
    cutoff = start + timedelta(days=5)

    async with uow_factory() as uow:
        assert await uow.outbox.purge(cutoff, 3) == 3
        await uow.commit()
    async with uow_factory() as uow:
        assert await uow.outbox.purge(cutoff, 3) == 1
        assert await uow.outbox.purge(cutoff, 3) == 0
        await uow.commit()

    async with uow_factory(readonly=True) as uow:
        assert await uow.outbox.list_pending(10) == [recent]
    async with uow_factory() as uow:  # what is left is exactly what was kept: both purged at a later time
        assert await uow.outbox.purge(start + timedelta(days=7), 10) == 2
        assert await uow.outbox.list_pending(10) == []


async def test_a_purge_left_without_commit_deletes_nothing(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock
) -> None:
    old = make.event()
    await store(uow_factory, old)
    async with uow_factory() as uow:
        assert await uow.outbox.purge(clock.now() + timedelta(days=1), 10) == 1
        # leaving without commit
    async with uow_factory(readonly=True) as uow:
        assert await uow.outbox.list_pending(10) == [old]
    async with uow_factory() as uow:
        assert await uow.outbox.purge(clock.now(), 10) == 0  # occurred at now: not before it

"""OutboxService: the outbox's housekeeping, on the in-memory fakes."""

from __future__ import annotations

from datetime import timedelta

from core.domain.events import DomainEvent
from core.services.outbox import OutboxService, OutboxSettings
from tests.fakes import FixedClock, InMemoryDatabase


def _event(n: int, clock: FixedClock) -> DomainEvent:
    return DomainEvent(
        id=f"evt_{n:06d}",
        type="order.created",
        aggregate_type="order",
        aggregate_id=f"ord_{n}",
        occurred_at=clock.now(),
        payload={"id": f"ord_{n}"},
    )


async def test_events_past_the_retention_are_purged_a_batch_per_unit_of_work(
    db: InMemoryDatabase, clock: FixedClock
) -> None:
    old = [_event(n, clock) for n in range(450)]
    clock.advance(days=20)
    young = [_event(n, clock) for n in range(450, 460)]
    async with db() as uow:
        for event in old + young:
            await uow.outbox.append(event)
        await uow.outbox.mark_delivered(young[0].id, clock.now())
        await uow.commit()
    service = OutboxService(db, clock, OutboxSettings(retention=timedelta(days=30), batch=200))
    clock.advance(days=10, seconds=1)  # the old ones are 30 days and a second old; the young 10 days
    commits = db.commits

    assert await service.purge_old_events() == 450
    assert db.commits - commits == 3  # 200, 200, 50: other requests get the store in between
    assert sorted(db.store.outbox) == [e.id for e in young]
    assert await service.purge_old_events() == 0
    clock.advance(days=20)
    assert await service.purge_old_events() == 10
    assert db.store.outbox == {} and db.store.delivered == {}

"""The outbox's housekeeping: events past keeping are purged, so that the table holds at
most the retention's worth of events, however long the store runs."""

from __future__ import annotations

from datetime import timedelta

import attrs

from core.ports.clock import Clock
from core.ports.unit_of_work import UnitOfWorkFactory


@attrs.frozen
class OutboxSettings:
    retention: timedelta = timedelta(days=30)  # how long an event is kept (see Outbox.purge)
    batch: int = 200  # events deleted per unit of work: each unit holds the store for ~ms


class OutboxService:
    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, settings: OutboxSettings | None = None):
        self._uow = uow
        self._clock = clock
        self._settings = settings or OutboxSettings()

    async def purge_old_events(self) -> int:
        """Purge the events kept longer than the retention (delivered before it, or, while
        nothing delivers them, occurred before it: see Outbox.purge); returns how many.

        A batch per unit of work, until a batch comes back short, so that other requests get
        the store in between. For the server's periodic task: idempotent, and safe to run in
        several processes at once (an event is deleted once; the others find it gone)."""
        before = self._clock.now() - self._settings.retention
        purged = 0
        while True:
            async with self._uow() as uow:
                batch = await uow.outbox.purge(before, self._settings.batch)
                await uow.commit()
            purged += batch
            if batch < self._settings.batch:
                return purged

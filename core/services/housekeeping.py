"""What every server process does by itself, instead of a separate worker, and how often.

Each round: unpaid orders past their deadline expire (and give their stock back), card
refunds the provider never heard of (it was unreachable) are sent again. Every so often:
forgotten idempotency keys, records of long-ended sessions, outbox events past their
retention and long-expired authorization codes are purged. Every job is
idempotent and safe to run in several processes at once; one that fails does not keep the
others from running, and is tried again the next round.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import attrs

from core.ports.clock import Clock
from core.services.auth import AuthService
from core.services.idempotency import IdempotencyService
from core.services.oauth import OAuthService
from core.services.orders import OrderService
from core.services.outbox import OutboxService
from core.services.payments import PaymentService


@attrs.frozen
class HousekeepingSettings:
    interval: timedelta = timedelta(seconds=30)  # between rounds
    purge_every: timedelta = timedelta(minutes=10)


@attrs.frozen
class JobFailed:
    job: str
    error: Exception


class Housekeeping:
    def __init__(
        self,
        orders: OrderService,
        payments: PaymentService,
        idempotency: IdempotencyService,
        auth: AuthService,
        outbox: OutboxService,
        oauth: OAuthService,
        clock: Clock,
        settings: HousekeepingSettings | None = None,
    ):
        self._orders = orders
        self._payments = payments
        self._idempotency = idempotency
        self._auth = auth
        self._outbox = outbox
        self._oauth = oauth
        self._clock = clock
        self._settings = settings or HousekeepingSettings()
        self._next_purge: datetime | None = None
        # Rounds begun, and of those ended, the ones where every job succeeded or some failed:
        # what a test waits on (rather than a guess at how long a round takes), and metrics.
        self.begun = 0
        self.finished = 0
        self.failed = 0

    @property
    def interval(self) -> timedelta:
        return self._settings.interval

    async def run_round(self) -> list[JobFailed]:
        """One round of every job that is due; returns the jobs that failed."""
        self.begun += 1
        jobs: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("expire_orders", self._expire_all_due),
            ("resend_refunds", self._payments.resend_unsent_refunds),
        ]
        now = self._clock.now()
        if self._next_purge is None:
            self._next_purge = now + self._settings.purge_every  # not at start: a restart loop would purge each time
        elif now >= self._next_purge:
            self._next_purge = now + self._settings.purge_every
            jobs += [
                ("purge_idempotency_keys", self._idempotency.purge_expired),
                ("purge_ended_sessions", self._auth.purge_ended_sessions),
                ("purge_outbox", self._outbox.purge_old_events),
                ("purge_authorization_codes", self._oauth.purge_expired_codes),
            ]
        failed = []
        for name, job in jobs:
            try:
                await job()
            except Exception as error:  # reported to the caller, which logs it; the next job runs
                failed.append(JobFailed(name, error))
        if failed:
            self.failed += 1
        else:
            self.finished += 1
        return failed

    async def _expire_all_due(self) -> int:
        expired = 0
        while batch := await self._orders.expire_due():  # a batch at a time until none is due
            expired += len(batch)
        return expired

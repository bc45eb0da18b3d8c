"""Ended sessions, refused at once: the revocation set every server process keeps.

An access token lives 15 minutes and is verified without a database read (its signature
and claims). When a session ends early (logout, a replayed refresh token, a password
change, a disabled account), its id is recorded in the store in the transaction that ends
it; each process keeps the ids of recently ended sessions in memory and refuses their
tokens. The set is brought up to date from the store only when the store has changed
since (its change counter), and then at most every ``poll_interval``: a session ended by
another process is refused within that interval, one ended by this process at once, and a
customer's request costs no database read.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from core.domain.errors import SessionEnded
from core.ports.clock import Clock
from core.ports.unit_of_work import UnitOfWorkFactory

#: Records read from the store per query while catching up.
_BATCH = 1000
_PRUNE_EVERY = timedelta(minutes=1)


class SessionGuard:
    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, poll_interval: timedelta = timedelta(milliseconds=100)):
        self._uow = uow
        self._clock = clock
        self._poll_interval = poll_interval
        self._ended: dict[str, datetime] = {}  # session id -> when the record is no longer needed
        self._cursor: str | None = None
        self._loaded = False
        self._refreshing = False
        self._seen_counter: int | None = None
        self._polled_at: datetime | None = None
        self._next_prune: datetime | None = None

    async def check(self, session_id: str) -> None:
        """Raise SessionEnded if the session has ended."""
        await self._catch_up()
        if session_id in self._ended:
            raise SessionEnded()

    def ended(self, session_ids: Iterable[str], until: datetime) -> None:
        """This process ended these sessions (and committed it): refuse them from now on."""
        for session_id in session_ids:
            self._ended[session_id] = max(until, self._ended.get(session_id, until))

    async def _catch_up(self) -> None:
        counter = self._uow.change_counter()
        if counter == self._seen_counter:
            return
        now = self._clock.now()
        if self._loaded and (
            self._refreshing
            or (self._polled_at is not None and timedelta(0) <= now - self._polled_at < self._poll_interval)
        ):
            return  # caught up a moment ago (or catching up now): the next request after the interval will
        # Not loaded yet, or due: read (also while another request's read is in flight, if
        # nothing was ever loaded: no request is served against an empty set by default).
        self._refreshing = True
        try:
            async with self._uow(readonly=True) as uow:
                while True:
                    changes = await uow.revoked_sessions.changes(self._cursor, now, _BATCH)
                    self._cursor = changes.cursor
                    for record in changes.ended:
                        self.ended((record.session_id,), record.until)
                    if changes.complete:
                        break
            # Only once caught up: a read that failed half-way (the store away, a read past its
            # budget) is tried again by the next request, which meanwhile is refused (the
            # error reaches it), never served against a set that may be missing an ended
            # session. A commit during the read moved the counter again: the next check reads.
            self._seen_counter = counter
            self._polled_at = now
            self._loaded = True
        finally:
            self._refreshing = False
        self._prune(now)

    def _prune(self, now: datetime) -> None:
        if self._next_prune is not None and now < self._next_prune:
            return
        self._next_prune = now + _PRUNE_EVERY
        for session_id in [s for s, until in self._ended.items() if until <= now]:
            del self._ended[session_id]

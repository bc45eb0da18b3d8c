"""Throttle budgets on diskcache: one SQLite file, so every server process on the machine
counts the same uses."""

from __future__ import annotations

import hashlib
import json
import math
import pathlib
import secrets
import time
from collections.abc import Sequence
from typing import Any

import diskcache

from core.domain.errors import Throttled, Unavailable
from core.ports.clock import Clock
from core.ports.identity import ThrottleBudget, ThrottleTicket


class DiskcacheThrottle:
    """A sliding window of uses per key, each a [time, ticket id] pair.

    Each key holds its newest ``limit`` uses (older ones can never matter: a budget has
    room again when its ``limit``-th newest use leaves the window). A take reads and writes
    every key of the call inside one ``cache.transact()`` (an SQLite write transaction), so
    concurrent processes never both take the last use of a budget. Keys expire one window
    after their last use; there is no permanent lockout, only a wait of at most one window.

    The calls are synchronous: each is a short SQLite transaction (tens of µs), made only on
    the paths that are throttled (sign-in, sign-up, password change).
    """

    def __init__(self, directory: pathlib.Path, *, clock: Clock):
        self._clock = clock
        # A short busy timeout: the calls run on the event loop, and every transaction of the
        # file takes microseconds, so waiting longer than this means something is wrong (a
        # stalled process holding the lock): the caller hears 503 at once rather than holding
        # the loop. "none": reads need not write LRU bookkeeping; expiry keeps the file small.
        self._cache = diskcache.Cache(str(directory), timeout=0.05, eviction_policy="none")

    def close(self) -> None:
        self._cache.close()

    async def take(self, budgets: Sequence[ThrottleBudget]) -> ThrottleTicket:
        now = self._clock.now().timestamp()
        ticket = ThrottleTicket(keys=tuple(b.key for b in budgets), id=secrets.token_hex(8))
        try:
            with self._cache.transact():
                current = [(b, self._recent(b, now)) for b in budgets]
                wait = max((_wait(uses, b, now) for b, uses in current), default=0)
                if wait > 0:
                    raise Throttled(retry_after=wait)
                for budget, uses in current:
                    uses.append([now, ticket.id])
                    self._cache.set(_key(budget.key), json.dumps(uses[-budget.limit :]), expire=budget.window_seconds)
        except diskcache.Timeout:
            raise Unavailable("The sign-in service is busy; try again.", retry_after=1) from None
        return ticket

    async def give_back(self, ticket: ThrottleTicket, *, reset: Sequence[str] = ()) -> None:
        try:
            with self._cache.transact():
                for key in ticket.keys:
                    if key in reset:
                        continue
                    raw = self._cache.get(_key(key))
                    if not isinstance(raw, str):
                        continue
                    uses = json.loads(raw)
                    kept = [use for use in uses if use[1] != ticket.id]
                    if len(kept) != len(uses):
                        # Keep the entry's expiry: one window after a use that is still there or later.
                        self._cache.set(_key(key), json.dumps(kept), expire=self._expire_left(key))
                for key in reset:
                    self._cache.delete(_key(key))
        except diskcache.Timeout:
            raise Unavailable("The sign-in service is busy; try again.", retry_after=1) from None

    def _recent(self, budget: ThrottleBudget, now: float) -> list[list[Any]]:
        raw = self._cache.get(_key(budget.key))
        uses: list[list[Any]] = json.loads(raw) if isinstance(raw, str) else []
        return [use for use in uses if use[0] > now - budget.window_seconds]

    def _expire_left(self, key: str) -> float | None:
        _, expire_time = self._cache.get(_key(key), expire_time=True)
        if expire_time is None:
            return None
        return max(0.001, expire_time - time.time())  # diskcache expires by the wall clock


def _key(key: str) -> str:
    # Hashed so that the cache file, which no backup or deletion policy covers, holds no emails.
    return "throttle:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _wait(uses: list[list[Any]], budget: ThrottleBudget, now: float) -> int:
    """Seconds until the budget has room; 0 if it has now. A use at t counts while
    now < t + window; the limit-th newest is the one whose departure makes room."""
    if len(uses) < budget.limit:
        return 0
    return max(1, math.ceil(uses[-budget.limit][0] + budget.window_seconds - now))

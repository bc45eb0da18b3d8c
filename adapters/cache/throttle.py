"""Login throttling on diskcache: one SQLite file, so every server process on the machine
counts the same failures."""

from __future__ import annotations

import hashlib
import json
import math
import pathlib

import diskcache

from core.domain.errors import LoginThrottled, Unavailable
from core.ports.clock import Clock


class DiskcacheLoginThrottle:
    """A sliding window of failure timestamps per account and per source IP.

    Each key holds the newest ``limit`` failure times (older ones can never matter: the
    throttle lifts when the ``limit``-th newest failure leaves the window). Reads and
    writes of a key happen inside ``cache.transact()``, so concurrent processes never lose
    a failure. Keys expire one window after their last failure; there is no permanent
    lockout, only a wait of at most one window.

    The calls are synchronous: each is a short SQLite transaction (tens of µs), made only
    on the login path.
    """

    def __init__(
        self,
        directory: pathlib.Path,
        *,
        clock: Clock,
        per_account: int = 5,
        per_ip: int = 20,
        window_seconds: int = 900,
    ):
        if per_account < 1 or per_ip < 1 or window_seconds < 1:
            raise ValueError("per_account, per_ip and window_seconds must be positive")
        self._clock = clock
        self._per_account = per_account
        self._per_ip = per_ip
        self._window = window_seconds
        # A short busy timeout: a login must not wait a minute (diskcache's default) on a lock.
        # "none": reads need not write LRU bookkeeping; expiry alone keeps the file small.
        self._cache = diskcache.Cache(str(directory), timeout=2, eviction_policy="none")

    def close(self) -> None:
        self._cache.close()

    async def check(self, email: str, source_ip: str | None) -> None:
        now = self._now()
        waits = [self._wait(self._read(key), limit, now) for key, limit in self._keys(email, source_ip)]
        retry_after = max(waits)
        if retry_after > 0:
            raise LoginThrottled(retry_after=retry_after)

    async def record_failure(self, email: str, source_ip: str | None) -> None:
        now = self._now()
        try:
            with self._cache.transact():
                for key, limit in self._keys(email, source_ip):
                    times = [t for t in self._read(key) if t > now - self._window]
                    times.append(now)
                    self._cache.set(key, json.dumps(times[-limit:]), expire=self._window)
        except diskcache.Timeout:
            raise Unavailable("The login service is busy; try again.", retry_after=1) from None

    async def record_success(self, email: str) -> None:
        try:
            self._cache.delete(self._account_key(email))
        except diskcache.Timeout:
            raise Unavailable("The login service is busy; try again.", retry_after=1) from None

    def _keys(self, email: str, source_ip: str | None) -> list[tuple[str, int]]:
        keys = [(self._account_key(email), self._per_account)]
        if source_ip is not None:
            keys.append((f"login:ip:{source_ip}", self._per_ip))
        return keys

    @staticmethod
    def _account_key(email: str) -> str:
        # Hashed so that the cache file, which no backup or deletion policy covers, holds no emails.
        return "login:account:" + hashlib.sha256(email.encode("utf-8", "surrogatepass")).hexdigest()

    def _read(self, key: str) -> list[float]:
        try:
            raw = self._cache.get(key)
        except diskcache.Timeout:
            raise Unavailable("The login service is busy; try again.", retry_after=1) from None
        return json.loads(raw) if isinstance(raw, str) else []

    def _wait(self, times: list[float], limit: int, now: float) -> int:
        """Seconds until fewer than ``limit`` failures remain in the window; 0 if already so."""
        recent = [t for t in times if t > now - self._window]
        if len(recent) < limit:
            return 0
        # A failure at t counts while now < t + window; the limit-th newest is the one whose
        # departure lifts the throttle.
        return max(1, math.ceil(recent[-limit] + self._window - now))

    def _now(self) -> float:
        return self._clock.now().timestamp()

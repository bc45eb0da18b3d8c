"""argon2id password hashes, computed off the event loop in a bounded, prioritized pool."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import argon2
from argon2.exceptions import Argon2Error, InvalidHashError

from core.domain.errors import PasswordHashingBusy

T = TypeVar("T")

# OWASP Password Storage Cheat Sheet: argon2id with at least m=19 MiB, t=2, p=1.
MIN_MEMORY_KIB = 19 * 1024
MIN_TIME_COST = 2
MIN_PARALLELISM = 1

#: Priorities: lower runs first. A sign-in waits for nothing but other sign-ins.
_VERIFY = 0
_HASH = 1
#: Seconds one argon2id run takes at the minimum cost on this hardware (for Retry-After).
_SECONDS_PER_RUN = 0.03


def _encode(password: str) -> bytes:
    # A JSON body can carry lone surrogates ("\ud800"); strict UTF-8 would raise on them
    # and turn a bad password into a server error. surrogatepass is still injective.
    return password.encode("utf-8", "surrogatepass")


class _Scheduler:
    """``workers`` slots; a caller that finds none free waits in a priority queue (then
    first come, first served), or is refused at once when too many already wait."""

    def __init__(self, workers: int):
        self._free = workers
        self._workers = workers
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @property
    def waiting(self) -> int:
        return sum(1 for _, _, f in self._waiting if not f.done())

    def retry_after(self) -> int:
        return max(1, math.ceil((self.waiting + 1) * _SECONDS_PER_RUN / self._workers))

    def ahead_of(self, priority: int) -> int:
        """Waiting calls that would run before a new one of this priority."""
        return sum(1 for p, _, f in self._waiting if p <= priority and not f.done())

    async def acquire(self, priority: int, max_waiting: int) -> None:
        if self._free > 0 and not self.waiting:
            self._free -= 1
            return
        if self.ahead_of(priority) >= max_waiting:
            raise PasswordHashingBusy(self.retry_after())
        slot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (priority, next(self._order), slot))
        try:
            await slot
        except asyncio.CancelledError:
            if slot.done() and not slot.cancelled():
                self.release()  # it was handed the slot as it was cancelled: pass it on
            raise

    def release(self) -> None:
        while self._waiting:
            _, _, slot = heapq.heappop(self._waiting)
            if not slot.done():
                slot.set_result(None)  # the slot goes straight to the next in line
                return
        self._free += 1


class Argon2PasswordHasher:
    """Hashes run in a small thread pool: argon2-cffi releases the GIL, so the event loop keeps
    serving while a hash is computed, and the pool size bounds the memory in use
    (``memory_kib`` per running hash) and the CPU a burst of sign-ins can take.

    Checks (``verify``) go before new hashes (``hash``); a new hash is refused with
    PasswordHashingBusy when ``hash_queue_limit`` calls of any kind already wait, and a
    check when ``verify_queue_limit`` checks do (waiting hashes do not delay a check), so
    that neither a flood of sign-ups nor one of sign-ins makes anyone wait long: they hear
    "try again" at once."""

    def __init__(
        self,
        *,
        memory_kib: int = MIN_MEMORY_KIB,
        time_cost: int = MIN_TIME_COST,
        parallelism: int = MIN_PARALLELISM,
        max_workers: int = 1,
        hash_queue_limit: int = 4,
        verify_queue_limit: int = 64,
    ):
        if memory_kib < MIN_MEMORY_KIB:
            raise ValueError(f"argon2 memory_kib must be at least {MIN_MEMORY_KIB} (19 MiB), not {memory_kib}")
        if time_cost < MIN_TIME_COST:
            raise ValueError(f"argon2 time_cost must be at least {MIN_TIME_COST}, not {time_cost}")
        if parallelism < MIN_PARALLELISM:
            raise ValueError(f"argon2 parallelism must be at least {MIN_PARALLELISM}, not {parallelism}")
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, not {max_workers}")
        if hash_queue_limit < 0 or verify_queue_limit < 0:
            raise ValueError("queue limits cannot be negative")
        self._hasher = argon2.PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=argon2.Type.ID
        )
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="argon2")
        self._scheduler = _Scheduler(max_workers)
        self._hash_queue_limit = hash_queue_limit
        self._verify_queue_limit = verify_queue_limit

    @property
    def waiting(self) -> int:
        """Calls waiting for a thread (for metrics and tests)."""
        return self._scheduler.waiting

    async def hash(self, password: str) -> str:
        return await self._run(_HASH, self._hash_queue_limit, self._hash, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        return await self._run(_VERIFY, self._verify_queue_limit, self._verify, password_hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except (InvalidHashError, ValueError):
            # Not an argon2 hash we can read: whatever it is, it is not the current parameters.
            return True

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    async def _run(self, priority: int, max_waiting: int, fn: Callable[..., T], *args: str) -> T:
        await self._scheduler.acquire(priority, max_waiting)
        future = asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        try:
            # The slot is held until the thread is done, even if our caller is cancelled
            # meanwhile: the thread goes on, and the pool must not be oversubscribed.
            return await asyncio.shield(future)
        finally:
            if future.done():
                self._scheduler.release()
            else:
                future.add_done_callback(lambda _: self._scheduler.release())

    def _hash(self, password: str) -> str:
        return self._hasher.hash(_encode(password))

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, _encode(password))
        except (Argon2Error, ValueError):
            # A mismatch, a malformed hash (InvalidHashError is a ValueError), or argon2
            # refusing the hash's parameters: all mean "not this password".
            return False

"""argon2id password hashes, computed off the event loop."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import argon2
from argon2.exceptions import Argon2Error, InvalidHashError

# OWASP Password Storage Cheat Sheet: argon2id with at least m=19 MiB, t=2, p=1.
MIN_MEMORY_KIB = 19 * 1024
MIN_TIME_COST = 2
MIN_PARALLELISM = 1


def _encode(password: str) -> bytes:
    # A JSON body can carry lone surrogates ("\ud800"); strict UTF-8 would raise on them
    # and turn a bad password into a server error. surrogatepass is still injective.
    return password.encode("utf-8", "surrogatepass")


class Argon2PasswordHasher:
    """Hashes run in a small thread pool: argon2-cffi releases the GIL, so the event loop keeps
    serving while a hash is computed, and the pool size bounds the memory in use
    (``memory_kib`` per running hash) and the CPU a burst of logins can take."""

    def __init__(
        self,
        *,
        memory_kib: int = MIN_MEMORY_KIB,
        time_cost: int = MIN_TIME_COST,
        parallelism: int = MIN_PARALLELISM,
        max_workers: int = 1,
    ):
        if memory_kib < MIN_MEMORY_KIB:
            raise ValueError(f"argon2 memory_kib must be at least {MIN_MEMORY_KIB} (19 MiB), not {memory_kib}")
        if time_cost < MIN_TIME_COST:
            raise ValueError(f"argon2 time_cost must be at least {MIN_TIME_COST}, not {time_cost}")
        if parallelism < MIN_PARALLELISM:
            raise ValueError(f"argon2 parallelism must be at least {MIN_PARALLELISM}, not {parallelism}")
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, not {max_workers}")
        self._hasher = argon2.PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=argon2.Type.ID
        )
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="argon2")

    async def hash(self, password: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._hash, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._verify, password_hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except (InvalidHashError, ValueError):
            # Not an argon2 hash we can read: whatever it is, it is not the current parameters.
            return True

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _hash(self, password: str) -> str:
        return self._hasher.hash(_encode(password))

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, _encode(password))
        except (Argon2Error, ValueError):
            # A mismatch, a malformed hash (InvalidHashError is a ValueError), or argon2
            # refusing the hash's parameters: all mean "not this password".
            return False

"""Looking up and completing idempotency claims (see core/ports/idempotency.py)."""

from __future__ import annotations

from core.ports.clock import Clock
from core.ports.idempotency import KEY_LIFETIME, StoredRequest
from core.ports.identity import KeyedDigest
from core.ports.unit_of_work import UnitOfWorkFactory

_PURGE_BATCH = 500


class IdempotencyService:
    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, digests: KeyedDigest):
        self._uow = uow
        self._clock = clock
        self._digests = digests

    def fingerprint(self, method: str, target: str, body: bytes) -> str:
        """What tells one request from another under the same key. Keyed: a request may
        carry a secret (a password), and a stored plain hash of it would let anyone with a
        copy of the database test guesses at the speed of SHA-256."""
        return self._digests.digest(b"%s %s\n%s" % (method.encode(), target.encode("utf-8", "surrogatepass"), body))

    async def lookup(self, scope: str, key: str, *, latest: bool = False) -> StoredRequest | None:
        """The request recorded under this key within its lifetime, if any.

        ``latest``: as a write unit sees the store (UnitOfWorkFactory), so including a copy of
        this request that committed while this one ran, whose commit() may not have returned
        yet. For a request that failed without committing: its failure may be that copy's
        effect (the stock it took), and the copy's claim must be found all the same."""
        async with self._uow(readonly=not latest) as uow:  # a write unit: left without commit
            stored = await uow.idempotency.get(scope, key)
        if stored is None or stored.created_at < self._clock.now() - KEY_LIFETIME:
            return None
        return stored

    async def complete(self, scope: str, key: str, status: int, headers: dict[str, str], body: bytes) -> None:
        async with self._uow() as uow:
            await uow.idempotency.complete(scope, key, status, headers, body)
            await uow.commit()

    async def release(self, scope: str, key: str) -> None:
        async with self._uow() as uow:
            await uow.idempotency.release(scope, key)
            await uow.commit()

    async def purge_expired(self) -> int:
        """For the server's housekeeping: forget keys past their lifetime, a batch per unit
        of work (after a long stop, a day of keys may be due at once)."""
        before = self._clock.now() - KEY_LIFETIME
        purged = 0
        while True:
            async with self._uow() as uow:
                batch = await uow.idempotency.purge(before, _PURGE_BATCH)
                await uow.commit()
            purged += batch
            if batch < _PURGE_BATCH:
                return purged

"""Idempotency keys: a client may repeat a POST safely; its effect happens once.

The entry point that receives a key sets ``current_claim`` for the duration of the
request. A unit of work that commits while a claim is current records the claim *in
the same transaction as the effect* (adapters do this in ``commit()``), so there are
only two outcomes even across a crash: the effect and the claim both exist, or neither
does. If another request has already recorded the same (scope, key), the commit raises
``IdempotencyKeyTaken`` and this request's effect is rolled back whole. The response
is attached to the claim right after (``IdempotencyRepository.complete``) and replayed
to any later request with the same key.
"""

from __future__ import annotations

from contextvars import ContextVar
from datetime import datetime, timedelta
from typing import Protocol

import attrs

from core.domain.errors import Conflict

#: How long a key is remembered (PRODUCT.md: keys live 24 h).
KEY_LIFETIME = timedelta(hours=24)


@attrs.define
class IdempotencyClaim:
    scope: str  # whose key: "user:<id>" or "ip:<address>"
    key: str
    fingerprint: str  # keyed digest of the request (method, path, body): the same key with another body is refused
    recorded: bool = False  # set by the unit of work that recorded it (later ones of the request do not)


@attrs.frozen
class StoredRequest:
    scope: str
    key: str
    # A keyed digest of the request (see IdempotencyService.fingerprint); empty: not known
    # (recorded before fingerprints were keyed), and then any request matches it.
    fingerprint: str
    created_at: datetime
    status: int | None = None  # None until the response is attached
    headers: dict[str, str] = attrs.Factory(dict)
    body: bytes = b""

    def matches(self, fingerprint: str) -> bool:
        """Whether a request with this fingerprint is the one that was recorded."""
        return self.fingerprint in ("", fingerprint)


class IdempotencyKeyTaken(Conflict):
    code = "idempotency_key_in_flight"

    def __init__(self) -> None:
        super().__init__("Another request with this Idempotency-Key was applied first.")


class IdempotencyKeyInFlight(Conflict):
    code = "idempotency_key_in_flight"

    def __init__(self) -> None:
        super().__init__(
            "A request with this Idempotency-Key is still being processed (or its response was "
            "lost in a crash after it was applied); retry in a moment, or look the resource up."
        )


#: The claim of the request being served, if it carries a key.
current_claim: ContextVar[IdempotencyClaim | None] = ContextVar("current_claim", default=None)


class IdempotencyRepository(Protocol):
    async def get(self, scope: str, key: str) -> StoredRequest | None:
        """The stored request, if one was recorded for this scope and key."""

    async def claim(self, claim: IdempotencyClaim, at: datetime, expired_before: datetime) -> bool:
        """Record the claim, stamped ``at``, in the caller's transaction; False (nothing
        written) if the same scope and key are held by a claim recorded at or after
        ``expired_before``, one recorded before it is replaced. Of two transactions
        claiming the same key at once, one gets False or waits and then gets False: never
        both True."""

    async def complete(self, scope: str, key: str, status: int, headers: dict[str, str], body: bytes) -> None:
        """Attach the response to a recorded claim."""

    async def release(self, scope: str, key: str) -> None:
        """Forget a claim at once: for a request whose outcome says "try again" (the payment
        provider was unreachable) and whose operation is safe to run again."""

    async def purge(self, before: datetime, limit: int) -> int:
        """Forget at most ``limit`` claims recorded before ``before``, oldest first; returns how
        many (fewer than ``limit``: none are left)."""


async def record_current_claim(idempotency: IdempotencyRepository, now: datetime) -> None:
    """What every unit of work's ``commit()`` does first: record the current claim, if there
    is one not yet recorded, in the transaction being committed; IdempotencyKeyTaken if
    another request holds the key (the caller then rolls its unit back whole)."""
    claim = current_claim.get()
    if claim is None or claim.recorded:
        return
    if not await idempotency.claim(claim, now, now - KEY_LIFETIME):
        raise IdempotencyKeyTaken()
    claim.recorded = True

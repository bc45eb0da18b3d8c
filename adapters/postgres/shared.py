"""What every instance on PostgreSQL must share, kept in the store rather than in each
host's data directory: the token signing keys, the key of request digests (idempotency
fingerprints), and the throttle counts of sign-in and sign-up.

- PostgresSigningKeys: the key documents of adapters/auth/keys.py in ``signing_keys``. The
  hot path reads an in-memory ring; a background task reads the table again every
  REFRESH_SECONDS, so a rotation made through one instance (or ``tillbox keys rotate``) is
  seen by all within that. A new key is published PUBLISH_DELAY before it signs: by the
  time any instance signs a token with it, every other one has loaded it, so a token signed
  by one instance verifies on every other.
- load_secret: a named random secret in ``store_secrets``, made by whichever instance needs
  it first (the others read that one).
- PostgresThrottle: the Throttle port's sliding windows as rows of ``throttle_uses``; a take
  locks its keys (advisory locks, in key order) for its transaction, so no budget is used
  more than its limit by any number of instances at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import Any

import asyncpg
from joserfc.jwk import OKPKey

from adapters.auth.keys import RETIREMENT_LEEWAY_SECONDS, build_ring, new_document, parse_document, public_jwks
from adapters.postgres.database import PostgresDatabase
from core.domain.errors import Throttled, Unavailable
from core.ports.clock import Clock
from core.ports.identity import ThrottleBudget, ThrottleTicket

log = logging.getLogger(__name__)

#: How often each instance reads the signing keys again.
REFRESH_SECONDS = 1.0
#: How long a new key is known before it signs: several refreshes, so that a slow instance
#: has it too.
PUBLISH_DELAY = timedelta(seconds=5)
#: The advisory lock that makes the first key (two instances starting together make one).
_FIRST_KEY_LOCK = 0x7469_6C6C_626F_7802


class PostgresSigningKeys:
    """The KeyRing (adapters/auth/tokens.py) of every instance sharing the store."""

    def __init__(self, database: PostgresDatabase, *, clock: Clock):
        self._db = database
        self._clock = clock
        self._ring: Any = None
        self._task: asyncio.Task[None] | None = None
        self._next_lookup = -math.inf
        self._lookups: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        """Load the keys (making the first one if the store has none) and keep them current."""
        async with self._db.pool().acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _FIRST_KEY_LOCK)
            if not await conn.fetchval("SELECT count(*) FROM signing_keys"):
                kid, document = new_document(None, self._clock.now(), retire_older_at=None)
                await self._insert(conn, kid, document)
        await self.refresh()
        self._task = asyncio.create_task(self._keep_current(), name="tillbox-signing-keys")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def refresh(self) -> None:
        rows = await self._db.fetch("SELECT kid, document FROM signing_keys")
        entries = []
        for kid, text in rows:
            try:
                entry = parse_document(json.loads(text), kid)
                times = (entry.created_at, entry.retire_older_at or entry.created_at)
                if any(at.tzinfo is None for at in times):
                    raise ValueError("a time without its offset")
                entries.append(entry)
            except Exception as error:  # one bad row must not take the others down
                log.error("signing key %s in the store is corrupt (%s); it is ignored", kid, type(error).__name__)
        ring = build_ring(entries)
        if ring is not None:
            self._ring = ring

    async def _keep_current(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            try:
                await self.refresh()
            except (Unavailable, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                pass  # the store is away: keep the keys we have, try again next time
            except Exception:
                # Never let the loop die: an instance that stops refreshing would refuse the
                # tokens of every key rotated after.
                log.exception("signing keys: the refresh failed; keeping the keys in memory")

    # The hot path: memory only.
    def _current(self) -> Any:
        if self._ring is None:
            raise Unavailable("The signing keys are not loaded yet.", code="keys_unavailable", retry_after=1)
        return self._ring

    def signing_key(self) -> tuple[str, OKPKey]:
        """The newest key whose time to sign has come (see PUBLISH_DELAY)."""
        now = self._clock.now()
        ring = self._current()
        ready = [e for e in ring.by_kid.values() if e.created_at <= now]
        entry = max(ready, key=lambda e: (e.created_at, e.kid)) if ready else ring.signing
        return entry.kid, entry.key

    def verification_key(self, kid: str) -> OKPKey | None:
        entry = self._current().by_kid.get(kid)
        if entry is None:
            self._look_again()
        if entry is None or (entry.retire_at is not None and self._clock.now().timestamp() > entry.retire_at):
            return None
        return entry.key

    def is_active(self, kid: str, now: float) -> bool:
        entry = self._current().by_kid.get(kid)
        return entry is not None and (entry.retire_at is None or now <= entry.retire_at)

    def public_jwks(self) -> dict[str, list[dict[str, Any]]]:
        return public_jwks(self._current(), self._clock.now().timestamp())

    def _look_again(self) -> None:
        """An unknown kid may be a key made a moment ago: read the keys again now (at most
        once a second), rather than at the next refresh."""
        now = time.monotonic()
        if now < self._next_lookup or self._task is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not called from the server's loop: the background refresh will see it
        self._next_lookup = now + REFRESH_SECONDS
        lookup = loop.create_task(self.refresh(), name="tillbox-signing-keys-lookup")
        self._lookups.add(lookup)
        lookup.add_done_callback(self._looked)

    def _looked(self, lookup: asyncio.Task[None]) -> None:
        self._lookups.discard(lookup)
        if not lookup.cancelled() and lookup.exception() is not None:
            log.debug("signing keys: an early refresh failed", exc_info=lookup.exception())

    # Operations.
    async def rotate_now(self, access_token_ttl_seconds: int) -> str:
        """A new key that signs PUBLISH_DELAY from now; the older ones verify until every token
        they signed has expired."""
        if access_token_ttl_seconds < 0:
            raise ValueError("access_token_ttl_seconds cannot be negative")
        await self.refresh()
        signs_at = self._clock.now() + PUBLISH_DELAY
        retire_older_at = signs_at + timedelta(seconds=access_token_ttl_seconds + RETIREMENT_LEEWAY_SECONDS)
        kid, document = new_document(self._ring, signs_at, retire_older_at=retire_older_at)
        async with self._db.pool().acquire() as conn:
            await self._insert(conn, kid, document)
        await self.refresh()
        return kid

    @staticmethod
    async def _insert(conn: asyncpg.Connection, kid: str, document: dict[str, Any]) -> None:
        await conn.execute(
            "INSERT INTO signing_keys (kid, created_at, document) VALUES ($1, $2::text::timestamptz, $3)",
            kid,
            document["created_at"],
            json.dumps(document),
        )


async def load_secret(database: PostgresDatabase, name: str, size: int) -> bytes:
    """The store's secret ``name`` (``size`` random bytes), made now if no instance made it."""
    async with database.pool().acquire() as conn:
        await conn.execute(
            "INSERT INTO store_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            name,
            secrets.token_bytes(size),
        )
        value: bytes = await conn.fetchval("SELECT value FROM store_secrets WHERE name = $1", name)
    if len(value) != size:
        raise ValueError(f"the store's secret {name!r} is corrupt (it must hold {size} bytes)")
    return value


class PostgresThrottle:
    """The Throttle port (core/ports/identity.py) for every instance sharing the store."""

    def __init__(self, database: PostgresDatabase, *, clock: Clock):
        self._db = database
        self._clock = clock

    @contextlib.asynccontextmanager
    async def _locked(self, keys: Sequence[str]) -> AsyncIterator[asyncpg.Connection]:
        try:
            async with self._db.pool().acquire(timeout=1) as conn, conn.transaction():
                for key in sorted(set(keys)):  # in one order: two takes never deadlock
                    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", key)
                yield conn
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise Unavailable("The sign-in service is busy; try again.", retry_after=1) from exc

    async def take(self, budgets: Sequence[ThrottleBudget]) -> ThrottleTicket:
        now = self._clock.now().timestamp()
        ticket = ThrottleTicket(keys=tuple(b.key for b in budgets), id=secrets.token_hex(8))
        keys = [_key(b.key) for b in budgets]
        wait = 0
        async with self._locked(keys) as conn:
            for budget, key in zip(budgets, keys, strict=True):
                uses = await conn.fetch(
                    "SELECT at FROM throttle_uses WHERE key = $1 AND at > $2 ORDER BY at DESC LIMIT $3",
                    key,
                    now - budget.window_seconds,
                    budget.limit,
                )
                if len(uses) >= budget.limit:
                    wait = max(wait, max(1, math.ceil(uses[-1][0] + budget.window_seconds - now)))
            if wait == 0:
                await conn.executemany(
                    "INSERT INTO throttle_uses (key, at, ticket, expires) VALUES ($1, $2, $3, $4)",
                    [(key, now, ticket.id, now + b.window_seconds) for key, b in zip(keys, budgets, strict=True)],
                )
            # Uses past their window can never matter again: each take forgets a few.
            await conn.execute(
                "DELETE FROM throttle_uses WHERE ctid = ANY(ARRAY("
                "SELECT ctid FROM throttle_uses WHERE expires < $1 LIMIT 100))",
                now,
            )
        if wait > 0:
            raise Throttled(retry_after=wait)
        return ticket

    async def give_back(self, ticket: ThrottleTicket, *, reset: Sequence[str] = ()) -> None:
        keys = [_key(key) for key in ticket.keys]
        async with self._locked(keys) as conn:
            await conn.execute("DELETE FROM throttle_uses WHERE key = ANY($1::text[]) AND ticket = $2", keys, ticket.id)
            if reset:
                await conn.execute("DELETE FROM throttle_uses WHERE key = ANY($1::text[])", [_key(k) for k in reset])


def _key(key: str) -> str:
    # Hashed as the diskcache throttle hashes them: the store holds no email in the clear.
    return "throttle:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()

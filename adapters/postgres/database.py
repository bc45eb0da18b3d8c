"""The PostgreSQL unit-of-work factory: a pool of connections, one per unit of work, and a
watch connection that keeps the change counter and the health of the store current.

Each unit of work takes a connection from the pool for its whole length and runs one
transaction on it (see unit_of_work.py). Several instances on several hosts share the
database; PostgreSQL orders their transactions, so nothing here coordinates them.

The watch connection LISTENs on CHANNEL. After a write unit commits, the announcer NOTIFYs
there, on a pooled connection, in a transaction of its own: a notification moves every
instance's change counter, so a page cached by one instance is re-read by every other
within a few milliseconds of a change. Not inside the unit's transaction: PostgreSQL
serializes the commits of every transaction that sent a NOTIFY, on the whole server, WAL
flush included (a lock on the notification queue, held until the commit is durable), so
every write of every instance would commit one after another. Commits that come while an
announcement is on its way share the next one; its transaction commits asynchronously
(synchronous_commit off: a notification lost in a crash costs nothing, every instance
counts a change when it reconnects), so that it waits for no WAL flush with that lock held.

The watch connection also asks for the schema version every WATCH_INTERVAL seconds: that
is what /readyz reports, without a query of its own (``check_ready`` is synchronous and
cheap). While the watch connection is lost, the store counts as not ready, the change
counter moves on every call (nothing cached can be known current), and the connection is
opened again with backoff, so service resumes by itself when the server is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg
import attrs

from adapters.postgres.migrations import LATEST_VERSION, apply_migrations
from adapters.postgres.unit_of_work import CHANNEL, PostgresUnitOfWork, database_unavailable
from core.domain.errors import Unavailable
from core.ports.clock import Clock

log = logging.getLogger(__name__)

#: How often the watch connection checks that the store answers (seconds).
WATCH_INTERVAL = 1.0
#: How long the watch waits for an answer before it counts the store as away.
WATCH_TIMEOUT = 2.0
#: The longest pause between attempts to reach a store that is away.
RECONNECT_MAX = 2.0


#: The announcement of commits (see the module's docstring): one statement string, one round trip.
ANNOUNCE = f"BEGIN; SET LOCAL synchronous_commit TO OFF; NOTIFY {CHANNEL}; COMMIT"


@attrs.define
class DatabaseStats:
    units_committed: int = 0
    units_rolled_back: int = 0
    notifications: int = 0  # heard, this instance's announcements included
    announcements: int = 0  # sent
    watch_reconnects: int = 0


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What the pool does to a connection given back, beyond rolling back a transaction left
    open (asyncpg always does that): nothing. A unit of work changes no session state (SET
    LOCAL only; no cursor, advisory lock or LISTEN on a pooled connection), and asyncpg's
    reset query (advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL) would cost a round trip
    per unit of work: a quarter of those of a GET /orders/{id}."""


class PostgresDatabase:
    """A ``UnitOfWorkFactory`` over one PostgreSQL database. ``clock`` stamps what the store
    records on its own (idempotency claims)."""

    def __init__(
        self,
        url: str,
        *,
        clock: Clock,
        pool_min: int = 2,
        pool_max: int = 20,
        busy_timeout_ms: int = 5000,
        read_budget_ms: int = 200,
        slow_read_budget_ms: int = 5000,
        connect_timeout_s: float = 5.0,
    ):
        self.url = url
        self.clock = clock
        self.pool_min = pool_min
        self.pool_max = pool_max
        self.busy_timeout_ms = busy_timeout_ms
        self.read_budget_ms = read_budget_ms
        self.slow_read_budget_ms = slow_read_budget_ms
        self.connect_timeout_s = connect_timeout_s
        self.stats = DatabaseStats()
        self._pool: asyncpg.Pool | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._announcer: asyncio.Task[None] | None = None
        self._unannounced = asyncio.Event()  # commits of this process that no announcement has told of
        self._announcing = False  # an announcement is on its way (cancelled by close: sent again)
        self._watching = asyncio.Event()
        self._ready_error: Unavailable | None = database_unavailable()
        self._schema_version = 0
        self._changes = 0
        self._closing = False
        # Slow units: at most this many at once, so that a burst of heavy searches leaves
        # the pool's other connections to the rest (SQLite keeps two slow readers).
        self._slow_units = asyncio.Semaphore(2)

    # Life cycle.
    async def open(self) -> None:
        """Connect, apply pending migrations, start the watch. Unavailable (one line) if the
        server cannot be reached or refuses the connection."""
        if self._pool is not None:
            raise RuntimeError("the database is already open")
        try:
            conn = await asyncpg.connect(self.url, timeout=self.connect_timeout_s)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise Unavailable(
                f"cannot connect to the PostgreSQL server named by database.url: {_reason(exc)}",
                code="database_unavailable",
            ) from None
        try:
            self._schema_version = await apply_migrations(conn)
        finally:
            await conn.close()
        self._pool = await asyncpg.create_pool(
            self.url,
            min_size=self.pool_min,
            max_size=self.pool_max,
            timeout=self.connect_timeout_s,
            # Statements are prepared once per connection and named by asyncpg; the
            # repositories use a few dozen constant strings.
            statement_cache_size=256,
            max_inactive_connection_lifetime=300,
            reset=_keep_session,
        )
        self._closing = False
        self._ready_error = None
        self._unannounced = asyncio.Event()
        self._watch_task = asyncio.create_task(self._watch(), name="tillbox-postgres-watch")
        self._announcer = asyncio.create_task(self._announce(), name="tillbox-postgres-announcer")
        # The first notification may be missed until LISTEN is in place: wait for it.
        async with asyncio.timeout(self.connect_timeout_s):
            await self._watching.wait()

    async def close(self) -> None:
        if self._pool is None:
            return
        if self._announcer is not None:
            self._announcer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._announcer
            self._announcer = None
        if self._unannounced.is_set() or self._announcing:  # the last commits: the others hear of them too
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.connect_timeout_s):
                    await self._send_announcement(self._pool)
        self._closing = True
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
            self._watch_task = None
        pool, self._pool = self._pool, None
        try:
            async with asyncio.timeout(10):
                await pool.close()  # waits for the connections in use to be released
        except TimeoutError:
            pool.terminate()
        self._ready_error = database_unavailable()

    # The factory.
    def __call__(self, *, readonly: bool = False, slow: bool = False) -> PostgresUnitOfWork:
        return PostgresUnitOfWork(self, readonly=readonly, slow=slow)

    def pool(self) -> asyncpg.Pool:
        if self._pool is None or self._closing:
            raise database_unavailable()
        return self._pool

    # The change counter.
    @property
    def change_latency(self) -> float:
        return 0.1  # a notification takes milliseconds; 0.1 s is what is promised

    def change_counter(self) -> int:
        if not self._watching.is_set():
            self._changes += 1  # other instances' commits cannot be heard: nothing is current
        return self._changes

    def committed(self) -> None:
        """A unit of this process committed (called by the unit of work): it counts here at
        once, and the announcer tells the other instances."""
        self._changes += 1
        self.stats.units_committed += 1
        self._unannounced.set()

    async def _announce(self) -> None:
        while True:
            await self._unannounced.wait()
            self._unannounced.clear()  # commits from here on wait for the next announcement
            try:
                await self._send_announcement(self.pool())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the server is away: the units fail too; try again shortly
                self._unannounced.set()
                log.debug("postgres announcement failed", extra={"fields": {"reason": _reason(exc)}})
                await asyncio.sleep(0.1)

    async def _send_announcement(self, pool: asyncpg.Pool) -> None:
        self._announcing = True  # until it is sent: one cancelled or failed is sent again
        async with pool.acquire(timeout=self.connect_timeout_s) as conn:
            await conn.execute(ANNOUNCE)
        self._announcing = False
        self.stats.announcements += 1

    def _notified(self, *_: Any) -> None:
        self._changes += 1
        self.stats.notifications += 1

    # Health.
    def check_ready(self) -> dict[str, Any]:
        """As the watch last found the store (at most WATCH_INTERVAL ago, or at once when
        the connection was lost): raises Unavailable unless it answers at this code's schema."""
        if self._ready_error is not None:
            raise self._ready_error
        return {"database": "ok", "schema_version": self._schema_version}

    async def _watch(self) -> None:
        delay = 0.1
        while True:
            conn: asyncpg.Connection | None = None
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(self.url, timeout=self.connect_timeout_s)
                conn.add_termination_listener(lambda _, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._notified)
                while not lost.is_set():
                    async with asyncio.timeout(WATCH_TIMEOUT):
                        version = await conn.fetchval("SELECT max(version) FROM _migrations")
                    self._schema_version = version
                    self._ready_error = (
                        None
                        if version == LATEST_VERSION
                        else Unavailable(
                            f"The database schema is at version {version}; this Tillbox needs {LATEST_VERSION}.",
                            code="schema_mismatch",
                        )
                    )
                    if not self._watching.is_set():
                        self._changes += 1  # what was missed while away counts as a change
                        self._watching.set()
                    delay = 0.1
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(WATCH_INTERVAL):
                            await lost.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the server is away (or refuses us): try again
                log.debug("postgres watch lost", extra={"fields": {"reason": _reason(exc)}})
            finally:
                self._watching.clear()
                self._ready_error = database_unavailable()
                if conn is not None:
                    conn.terminate()
            self.stats.watch_reconnects += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    # For tests and diagnostics.
    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self.pool().acquire() as conn:
            return await conn.fetchval(sql, *args)

    @property
    def watching(self) -> bool:
        return self._watching.is_set()


def _reason(exc: BaseException) -> str:
    """One line for the operator; never the URL (it may hold a password)."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text

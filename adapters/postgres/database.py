"""The PostgreSQL unit-of-work factory: a pool of connections, one per unit of work, and a
watch connection that keeps the change counter and the health of the store current.

Each unit of work takes a connection from the pool for its whole length and runs one
transaction on it (see unit_of_work.py). Several instances on several hosts share the
database; PostgreSQL orders their transactions, so nothing here coordinates them.

The watch connection LISTENs on CHANNEL, on which every instance NOTIFYs after its units
commit: a notification moves the change counter, so a page cached by one instance is read
again by every other within a few milliseconds of a change. The notification is sent
after the commit, at most one every ANNOUNCE_DELAY for all the commits in between, not in
each transaction: NOTIFY takes a lock that PostgreSQL holds from the commit through its
WAL flush, so that commits that notify would take turns across the whole server (measured:
2,100-3,900 commits/s with it, 5,200-7,500 without, 16 clients). An instance that stops
between a commit and its notification leaves the others' caches stale only until the next
change anyone announces (or their watch reconnects). It also asks for the schema version
every WATCH_INTERVAL seconds: that is what /readyz reports, without a query of its own
(``check_ready`` is synchronous and cheap). While the watch connection is lost, the store
counts as not ready, the change counter moves on every call (nothing cached can be known
current), and the connection is opened again with backoff, so service resumes by itself
when the server is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg
import attrs

from adapters.postgres.migrations import LATEST_VERSION, apply_migrations
from adapters.postgres.unit_of_work import PostgresUnitOfWork, database_unavailable
from core.domain.errors import Unavailable
from core.ports.clock import Clock

log = logging.getLogger(__name__)

#: The notification channel of commits.
CHANNEL = "tillbox_changes"
#: How long an instance gathers its commits before announcing them in one notification.
ANNOUNCE_DELAY = 0.01
#: How often the watch connection checks that the store answers (seconds).
WATCH_INTERVAL = 1.0
#: How long the watch waits for an answer before it counts the store as away.
WATCH_TIMEOUT = 2.0
#: The longest pause between attempts to reach a store that is away.
RECONNECT_MAX = 2.0


@attrs.define
class DatabaseStats:
    units_committed: int = 0
    units_rolled_back: int = 0
    notifications: int = 0
    watch_reconnects: int = 0


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
        self._watching = asyncio.Event()
        self._ready_error: Unavailable | None = database_unavailable()
        self._schema_version = 0
        self._changes = 0
        self._announcing: asyncio.Task[None] | None = None
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
        except ValueError:  # asyncpg could not read the URL; its message may quote part of it
            raise Unavailable(
                "database.url is not a PostgreSQL URL asyncpg can read (check its escaping: a password"
                " with @, #, / or % must be percent-encoded)",
                code="database_unavailable",
            ) from None
        try:
            self._schema_version = await apply_migrations(conn)
        finally:
            await conn.close()
        try:
            await self._start()
        except BaseException as exc:
            await self.close()
            if isinstance(exc, TimeoutError | OSError | asyncpg.PostgresError):
                raise Unavailable(
                    f"the PostgreSQL server named by database.url accepted one connection but not the pool's:"
                    f" {_reason(exc)} (check its max_connections and database.pool_min)",
                    code="database_unavailable",
                ) from None
            raise

    async def _start(self) -> None:
        self._pool = await asyncpg.create_pool(
            self.url,
            min_size=self.pool_min,
            max_size=self.pool_max,
            timeout=self.connect_timeout_s,
            # Statements are prepared once per connection and named by asyncpg; the
            # repositories use a few dozen constant strings.
            statement_cache_size=256,
            max_inactive_connection_lifetime=300,
            reset=_end_transaction,
        )
        self._closing = False
        self._ready_error = None
        self._watch_task = asyncio.create_task(self._watch(), name="tillbox-postgres-watch")
        # The first notification may be missed until LISTEN is in place: wait for it.
        async with asyncio.timeout(self.connect_timeout_s):
            await self._watching.wait()

    async def close(self) -> None:
        if self._pool is None:
            return
        # The last commits are announced before the pool closes, and so before the pool
        # refuses connections (pool() does once closing), or the announcement would fail.
        for _ in range(3):  # a commit made meanwhile starts another; a server closing has few
            announcing = self._announcing
            if announcing is None:
                break
            with contextlib.suppress(Exception):
                await announcing
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
        once, and is announced to the other instances within ANNOUNCE_DELAY."""
        self._changes += 1
        self.stats.units_committed += 1
        if self._announcing is None and not self._closing:
            self._announcing = asyncio.get_running_loop().create_task(self._announce(), name="tillbox-postgres-notify")

    async def _announce(self) -> None:
        try:
            await asyncio.sleep(ANNOUNCE_DELAY)  # the commits meanwhile share this notification
            self._announcing = None  # commits from now on are announced by the next one
            async with self.pool().acquire(timeout=self.busy_timeout_ms / 1000) as conn:
                await conn.execute(f"NOTIFY {CHANNEL}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the store is away: the others' watches reconnect and count a change
            log.debug("postgres notify failed", extra={"fields": {"reason": _reason(exc)}})
        finally:
            if self._announcing is asyncio.current_task():
                self._announcing = None

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

    # Single statements outside any unit of work: for what the store shares besides the
    # repositories (adapters/postgres/shared.py), tests and diagnostics.
    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self.pool().acquire() as conn:
            return await conn.fetchval(sql, *args)

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self.pool().acquire() as conn:
            return await conn.fetch(sql, *args)

    @property
    def watching(self) -> bool:
        return self._watching.is_set()


async def _end_transaction(conn: asyncpg.Connection) -> None:
    """What a connection needs before the pool hands it out again. asyncpg's default resets
    every session setting (RESET ALL, UNLISTEN *, pg_advisory_unlock_all, ...): a round trip
    on every release, ~30% of a short read-only unit. Nothing here changes session state:
    budgets are SET LOCAL, advisory locks are transaction locks, LISTEN is the watch
    connection's; every unit ends its transaction itself, and this makes sure of it."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


def _reason(exc: BaseException) -> str:
    """One line for the operator; never the URL (it may hold a password)."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text

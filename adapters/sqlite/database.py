"""The SQLite unit-of-work factory: reader connections, one writer connection, group commit.

A read-only unit holds a reader connection of its own from its start to its end, inside one
read transaction: every read of the unit sees the snapshot of its first read, and in WAL
mode a reader never waits for a writer. Units of concurrent requests interleave at their
awaits, so they cannot share one connection's transaction: readers come from a small pool,
opened as needed. Their statements run on the event loop, each within
``read_budget_ms`` (a progress handler interrupts it past that: QueryTimedOut, a 503). A
read-only unit that says it may be slow gets a reader of a second pool, whose statements
run through aiosqlite in the reader's own thread, within the larger
``slow_read_budget_ms``, while the loop serves other requests.

Writes are serialized by an ``asyncio.Lock`` held from a unit of work's start to its
commit or rollback, and committed in groups:

- the first unit of a batch opens the transaction with ``BEGIN IMMEDIATE`` in the writer
  thread (it may wait up to busy_timeout for another process: never on the loop);
- each unit runs inside ``SAVEPOINT uow``; its statements run on the loop (microseconds);
- ``commit()`` releases the savepoint and the lock, makes sure a flush is scheduled, and
  waits for the batch to be durable;
- the flush queues for the same lock (``asyncio.Lock`` is FIFO, so the units already
  waiting join the batch first), runs ``COMMIT`` in the writer thread (the fsync), and
  wakes every unit of the batch, or fails them all if COMMIT failed.

A unit left without commit rolls back to its savepoint only: one failing request does not
take down the others in its batch. One fsync then serves every unit that arrived while
the previous one was running, which is what lets synchronous=FULL keep up.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import pathlib
import sqlite3
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

import aiosqlite
import attrs

from adapters.sqlite.connection import StatementBudget, connect, is_busy
from adapters.sqlite.migrations import LATEST_VERSION, apply_migrations
from adapters.sqlite.unit_of_work import SqliteUnitOfWork
from core.domain.errors import Unavailable
from core.ports.clock import Clock

T = TypeVar("T")
C = TypeVar("C")

#: Readers of read-only units run on the loop, so they rarely overlap (only units that await
#: something in the middle do); the pool grows to this many before a unit waits for one.
LOOP_READERS = 16
#: Readers of slow units: one thread each, so at most this many slow reads run at once and
#: the others wait their turn (a burst of heavy searches cannot take every core).
SLOW_READERS = 2

_SCHEMA_VERSION = "SELECT max(version) FROM _migrations"


@attrs.define
class DatabaseStats:
    """Counters since open(), for /metrics and for tests of the batching."""

    commits: int = 0  # successful COMMITs: one fsync each
    failed_commits: int = 0
    units_committed: int = 0  # write units whose commit() returned
    units_rolled_back: int = 0  # write units left without commit
    largest_batch: int = 0


async def _wait_through_cancellation(future: asyncio.Future[Any]) -> bool:
    """Wait until a thread's work is done even if we are cancelled meanwhile: the thread
    goes on regardless, and the caller must know the connection's state before it cleans
    up. Returns True if a cancellation arrived (the caller re-raises it)."""
    cancelled = False
    while not future.done():
        try:
            await asyncio.wait((future,))
        except asyncio.CancelledError:
            cancelled = True
    return cancelled


@attrs.frozen
class _Reader:
    conn: sqlite3.Connection
    budget: StatementBudget


@attrs.frozen
class _SlowReader:
    conn: aiosqlite.Connection
    budget: StatementBudget


class _Pool(Generic[C]):
    """Reader connections, each held by one unit of work from its start to its end. Opened
    as needed up to ``size``; beyond that a unit waits for one to come back. The pool
    closes nothing itself: whoever holds a connection the pool no longer wants (``release``
    says so, ``discard`` and ``close`` hand them over) closes it, as it must be closed
    (aiosqlite's on the loop that uses it)."""

    def __init__(self, size: int, open_one: Callable[[], Awaitable[C]], wait_seconds: float):
        self._size = size
        self._open_one = open_one
        self._wait_seconds = wait_seconds  # how long a unit waits for a connection before a 503
        self._idle: list[C] = []
        self._count = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False

    async def acquire(self) -> C:
        while True:
            if self._closed:
                raise Unavailable("The database is not open.", code="database_unavailable")
            if self._idle:
                return self._idle.pop()  # the most recently used: its page cache is warm
            if self._count < self._size:
                self._count += 1
                try:
                    return await self._open_one()
                except BaseException:
                    self._count -= 1
                    self._wake_one()
                    raise
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout(self._wait_seconds):
                    await waiter
            except (asyncio.CancelledError, TimeoutError) as exc:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # we were woken, but will not take it: pass it on
                if isinstance(exc, TimeoutError):
                    # Every connection is held by reads that take long: this one is refused at
                    # once rather than queued behind them without end.
                    raise Unavailable(
                        "The database is busy with other reads; try again.", code="database_busy", retry_after=1
                    ) from None
                raise

    def adopt(self, conn: C) -> None:
        """Take a connection opened elsewhere into the pool."""
        self._count += 1
        self._idle.append(conn)

    def release(self, conn: C) -> bool:
        """Take a connection back; False if the pool is closed (the caller closes it)."""
        if self._closed:
            self._count -= 1
            return False
        self._idle.append(conn)
        self._wake_one()
        return True

    def discard(self) -> None:
        """Forget a connection the caller will close (its state is not known): another may open."""
        self._count -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> list[C]:
        """Refuse new units; returns the idle connections (the caller closes them)."""
        self._closed = True
        idle, self._idle = self._idle, []
        self._count -= len(idle)
        while self._waiters:
            self._wake_one()
        return idle


class SqliteDatabase:
    """A ``UnitOfWorkFactory`` over one SQLite file. Several processes may open the same
    file, each with its own instance: SQLite's file locks order their batches. ``clock``
    stamps what the store records on its own (idempotency claims), so that what the
    services expire by the same clock is stamped by it."""

    def __init__(
        self,
        path: pathlib.Path,
        *,
        clock: Clock,
        busy_timeout_ms: int = 5000,
        read_budget_ms: int = 200,
        slow_read_budget_ms: int = 5000,
    ):
        self.path = pathlib.Path(path)
        self.clock = clock
        self.busy_timeout_ms = busy_timeout_ms
        self.read_budget_ms = read_budget_ms
        self.slow_read_budget_ms = slow_read_budget_ms
        self.stats = DatabaseStats()
        self._reader: sqlite3.Connection | None = None  # autocommit: health checks and the change counter
        # Closed until open(): a read-only unit must not open (and so create) the file.
        self._readers = self._reader_pool()
        self._slow_readers = self._slow_reader_pool()
        self._readers.close()
        self._slow_readers.close()
        self._data_version = 0
        self._data_version_at = -1.0
        self._writer: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._lock = asyncio.Lock()
        self._waiters: list[asyncio.Future[None]] = []  # units released into the open batch
        self._flush_task: asyncio.Task[None] | None = None
        self._pending = 0  # units whose commit() waits for durability
        self._closing = False

    # Life cycle.
    async def open(self) -> None:
        """Create the directory and the file if needed, apply migrations, open connections."""
        if self._writer is not None:
            raise RuntimeError(f"{self.path} is already open")
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tillbox-sqlite-writer")
        future = asyncio.get_running_loop().run_in_executor(executor, self._open_connections)
        cancelled = await _wait_through_cancellation(future)
        if cancelled or future.exception() is not None:
            executor.shutdown(wait=False)
            if future.exception() is None:  # cancelled after the thread opened them
                writer, monitor, first_reader = future.result()
                for conn in (writer, monitor, first_reader.conn):
                    conn.close()
                raise asyncio.CancelledError
            future.result()  # raises the thread's exception
        self._writer, self._reader, first_reader = future.result()
        self._executor = executor
        self._readers = self._reader_pool()
        self._readers.adopt(first_reader)  # opened with the others: the first request waits for nothing
        self._slow_readers = self._slow_reader_pool()
        self._lock = asyncio.Lock()
        self._waiters = []
        self._flush_task = None
        self._pending = 0
        self._closing = False
        self.stats = DatabaseStats()

    def _open_connections(self) -> tuple[sqlite3.Connection, sqlite3.Connection, _Reader]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        opened: list[sqlite3.Connection] = []
        try:
            opened.append(connect(self.path, busy_timeout_ms=self.busy_timeout_ms))
            apply_migrations(opened[0], self.path)
            opened.append(connect(self.path, busy_timeout_ms=self.busy_timeout_ms, query_only=True))
            reader = self._open_reader()
        except BaseException:
            for conn in opened:
                conn.close()
            raise
        return opened[0], opened[1], reader

    # Readers.
    def _reader_pool(self) -> _Pool[_Reader]:
        return _Pool(LOOP_READERS, lambda: asyncio.to_thread(self._open_reader), self.read_budget_ms / 1000 * 5)

    def _open_reader(self) -> _Reader:
        budget = StatementBudget(self.read_budget_ms / 1000)
        conn = connect(self.path, busy_timeout_ms=self.busy_timeout_ms, query_only=True, budget=budget)
        return _Reader(conn, budget)

    def _slow_reader_pool(self) -> _Pool[_SlowReader]:
        return _Pool(SLOW_READERS, self._open_slow_reader, self.slow_read_budget_ms / 1000)

    async def _open_slow_reader(self) -> _SlowReader:
        budget = StatementBudget(self.slow_read_budget_ms / 1000)

        def connector() -> sqlite3.Connection:  # runs in the reader's own thread
            return connect(self.path, busy_timeout_ms=self.busy_timeout_ms, query_only=True, budget=budget)

        conn = aiosqlite.Connection(connector, iter_chunk_size=64)
        await conn  # starts its thread, which opens the connection
        return _SlowReader(conn, budget)

    async def close(self) -> None:
        """Let the units in flight and the pending flush finish, then close. Nothing that
        was committed (or is being committed) is lost; new write units are refused."""
        if self._writer is None:
            return
        self._closing = True
        while True:
            if self._flush_task is not None:
                await asyncio.wait((self._flush_task,))
            await self._lock.acquire()
            if self._flush_task is None:
                break
            self._lock.release()  # a unit queued before us committed: flush it first
        try:
            writer, reader, executor = self._writer, self._reader, self._executor
            assert reader is not None
            assert executor is not None
            if writer.in_transaction:  # not expected: every batch ends in a flush or a rollback
                writer.execute("ROLLBACK")
            reader.close()
            for loop_reader in self._readers.close():  # those in use are closed as their units end
                loop_reader.conn.close()
            for slow_reader in self._slow_readers.close():
                await slow_reader.conn.close()
            await asyncio.get_running_loop().run_in_executor(executor, self._optimize_and_close, writer)
            executor.shutdown(wait=False)
        finally:
            self._writer = self._reader = self._executor = None
            self._lock.release()

    @staticmethod
    def _optimize_and_close(writer: sqlite3.Connection) -> None:
        # Updates planner statistics where they are stale; may wait for another process's lock.
        with contextlib.suppress(sqlite3.Error):
            writer.execute("PRAGMA optimize")
        writer.close()

    # The factory.
    def __call__(self, *, readonly: bool = False, slow: bool = False) -> SqliteUnitOfWork:
        return SqliteUnitOfWork(self, readonly=readonly, slow=slow)

    # Health.
    def check_ready(self) -> dict[str, Any]:
        """Cheap and synchronous, for /readyz: raises Unavailable unless the database is open
        and at the schema version this code expects."""
        reader = self._reader
        if reader is None or self._closing:
            raise Unavailable("The database is not open.", code="database_unavailable")
        try:
            version = reader.execute(_SCHEMA_VERSION).fetchall()[0][0]
        except sqlite3.Error as exc:
            raise Unavailable("The database cannot be read.", code="database_unavailable") from exc
        if version != LATEST_VERSION:
            raise Unavailable(
                f"The database schema is at version {version}; this Tillbox needs {LATEST_VERSION}.",
                code="schema_mismatch",
            )
        return {"database": "ok", "schema_version": version}

    def read_scalar(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> Any:
        """The first column of the first row (None if no row), on the reader connection."""
        rows = self.reader_connection().execute(sql, params).fetchall()
        return rows[0][0] if rows else None

    def pragmas(self) -> dict[str, dict[str, Any]]:
        """The settings in force on each connection, for diagnostics."""
        names = ("journal_mode", "synchronous", "foreign_keys", "busy_timeout", "query_only", "temp_store")
        return {
            role: {name: conn.execute(f"PRAGMA {name}").fetchall()[0][0] for name in names}
            for role, conn in (("reader", self.reader_connection()), ("writer", self._require_writer()))
        }

    @property
    def pending_commits(self) -> int:
        """Units whose commit() is waiting for their batch to be durable."""
        return self._pending

    #: How often other processes' commits are looked for (PRAGMA data_version takes a read
    #: lock: two fcntl calls, ~15% of a cached GET's CPU under load when asked every time).
    CHANGE_POLL_SECONDS = 0.001

    @property
    def change_latency(self) -> float:
        return self.CHANGE_POLL_SECONDS

    def change_counter(self) -> int:
        """Commits of this process count at once; other processes' within a millisecond.
        The reader never writes, so its data_version moves with every commit by anyone."""
        now = time.monotonic()
        if now - self._data_version_at >= self.CHANGE_POLL_SECONDS:
            self._data_version = self.reader_connection().execute("PRAGMA data_version").fetchone()[0]
            self._data_version_at = now
        return (self._data_version << 32) + self.stats.commits

    def reader_connection(self) -> sqlite3.Connection:
        """The monitoring connection (autocommit, query_only, no budget): health checks, the
        change counter, diagnostics. Read-only units have readers of their own."""
        if self._reader is None:
            raise Unavailable("The database is not open.", code="database_unavailable")
        return self._reader

    # What SqliteUnitOfWork calls (same package; not for other callers).

    def _require_writer(self) -> sqlite3.Connection:
        if self._writer is None:
            raise Unavailable("The database is not open.", code="database_unavailable")
        return self._writer

    async def _begin_unit(self) -> sqlite3.Connection:
        """Take the write lock, open a batch if none is open, and start the unit's savepoint."""
        if self._closing or self._writer is None:
            raise Unavailable("The database is closed.", code="database_unavailable")
        await self._lock.acquire()
        try:
            writer = self._require_writer()
            if not writer.in_transaction:
                await self._in_writer_thread(writer.execute, "BEGIN IMMEDIATE")
            writer.execute("SAVEPOINT uow")
        except sqlite3.OperationalError as exc:
            self._release_after_rollback()
            if is_busy(exc):
                raise Unavailable(
                    "The database is busy with another process; try again.", code="database_busy", retry_after=1
                ) from exc
            raise
        except BaseException:
            self._release_after_rollback()
            raise
        return writer

    async def _commit_unit(self) -> None:
        """The unit has released its savepoint into the batch: let the next unit in, and
        wait until the batch is durable."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._pending += 1
        if self._flush_task is None:
            self._flush_task = asyncio.create_task(self._flush(), name="tillbox-sqlite-flush")
        self._lock.release()
        # If our caller is cancelled here, the waiter is cancelled but the changes are in the
        # batch all the same: "maybe committed", as with any cancelled commit.
        await waiter
        self.stats.units_committed += 1

    def _rollback_unit(self) -> None:
        """The unit left without commit; its savepoint is already rolled back."""
        self.stats.units_rolled_back += 1
        self._release_after_rollback()

    def _release_after_rollback(self) -> None:
        writer = self._writer
        if writer is not None and writer.in_transaction and self._flush_task is None:
            # Nobody committed into this batch: end it now rather than hold the file's
            # write lock (other processes wait on it) until the next unit comes.
            writer.execute("ROLLBACK")
        self._lock.release()

    def _fail_batch(self) -> None:
        """SQLite rolled the whole batch back under us (disk full, I/O error): every unit
        that committed into it has lost its changes, and must hear so."""
        waiters, self._waiters = self._waiters, []
        self._resolve(waiters, self._batch_lost_error())

    @staticmethod
    def _batch_lost_error() -> Unavailable:
        return Unavailable(
            "The database rolled the transaction back (disk full or I/O error); nothing was saved.",
            code="database_error",
        )

    # The flush.
    async def _flush(self) -> None:
        cancelled = False
        async with self._lock:
            self._flush_task = None
            waiters, self._waiters = self._waiters, []
            writer = self._require_writer()
            error: BaseException | None = None
            if writer.in_transaction:
                future = asyncio.get_running_loop().run_in_executor(self._executor, writer.execute, "COMMIT")
                cancelled = await _wait_through_cancellation(future)
                error = future.exception()
                if error is None:
                    self.stats.commits += 1
                    self.stats.largest_batch = max(self.stats.largest_batch, len(waiters))
                else:
                    self.stats.failed_commits += 1
                    if writer.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            writer.execute("ROLLBACK")
            elif waiters:
                error = self._batch_lost_error()
            self._resolve(waiters, error)
        if cancelled:
            raise asyncio.CancelledError

    def _resolve(self, waiters: list[asyncio.Future[None]], error: BaseException | None) -> None:
        self._pending -= len(waiters)
        for waiter in waiters:
            if waiter.done():  # its caller was cancelled
                continue
            if error is None:
                waiter.set_result(None)
            else:
                failure = Unavailable("The database could not save the changes.", code="commit_failed")
                failure.__cause__ = error
                waiter.set_exception(failure)

    async def _in_writer_thread(self, fn: Callable[..., T], *args: Any) -> T:
        future = asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        if await _wait_through_cancellation(future):
            raise asyncio.CancelledError
        return future.result()

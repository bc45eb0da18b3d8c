"""Opening a SQLite connection the one way Tillbox uses them.

The stdlib ``sqlite3`` module: a statement runs in microseconds, and aiosqlite's hop to
its thread costs ~125 µs each. Slow things (BEGIN IMMEDIATE, which may wait for another
process; COMMIT, which fsyncs; reads that may take long) run in a thread chosen by the caller.
"""

from __future__ import annotations

import logging
import math
import pathlib
import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

import tenacity

T = TypeVar("T")
log = logging.getLogger(__name__)

#: Statements cached per connection; the repositories use a few dozen constant strings.
CACHED_STATEMENTS = 256
#: Page cache per connection, in KiB (negative: a size, not a number of pages).
CACHE_SIZE_KIB = 16_384
#: The WAL file is truncated back to this after a checkpoint, so a burst does not leave it huge.
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
#: SQLite calls a connection's progress handler every this many virtual-machine steps: tens
#: of microseconds of work. The statements of the hot path finish before the first call.
PROGRESS_STEPS = 1000


class StatementBudget:
    """A time limit for each statement of one connection, kept by SQLite's progress handler:
    past ``seconds``, the statement is interrupted (sqlite3 raises SQLITE_INTERRUPT, and
    SQLite undoes that statement only). Between statements there is no limit."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._deadline = math.inf

    def install(self, conn: sqlite3.Connection) -> None:
        conn.set_progress_handler(self._past_deadline, PROGRESS_STEPS)

    def _past_deadline(self) -> bool:
        return time.monotonic() > self._deadline

    def start(self) -> None:
        self._deadline = time.monotonic() + self.seconds

    def stop(self) -> None:
        self._deadline = math.inf


def is_interrupt(exc: sqlite3.Error) -> bool:
    """True when the statement was interrupted (by a StatementBudget, or ``interrupt()``)."""
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_INTERRUPT


def connect(
    path: pathlib.Path, *, busy_timeout_ms: int, query_only: bool = False, budget: StatementBudget | None = None
) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit ``BEGIN`` statements)
    with WAL, synchronous=FULL and foreign keys on; ``query_only`` refuses every write;
    ``budget`` limits the time of each of its statements."""
    conn = sqlite3.connect(
        str(path),
        timeout=busy_timeout_ms / 1000,
        isolation_level=None,
        check_same_thread=False,
        cached_statements=CACHED_STATEMENTS,
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        (mode,) = retry_while_busy(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone(), busy_timeout_ms)
        if mode != "wal":
            raise sqlite3.OperationalError(f"{path}: cannot use WAL mode (journal_mode is {mode!r})")
        conn.execute("PRAGMA synchronous = FULL")
        # Deleted content is overwritten, not left in free pages: what is purged or wiped (a
        # digest, a revoked token, an old idempotency fingerprint) is gone from the file too,
        # whatever the SQLite build's default.
        conn.execute("PRAGMA secure_delete = ON")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA cache_size = {-CACHE_SIZE_KIB}")
        # Readers sort and group in memory. The writer keeps SQLite's default (a file), for
        # its savepoint journals: with it SQLite keeps a journal in memory up to 64 KiB and
        # spills a larger one to a temporary file, where with MEMORY it keeps every journal
        # in memory and walks it whole at the end of each statement (memjournal truncation):
        # a unit of work of thousands of statements (an import) then slowed down with every
        # statement, 14,000 product inserts/s falling to 600/s by the 25,000th product.
        conn.execute(f"PRAGMA temp_store = {'MEMORY' if query_only else 'DEFAULT'}")
        conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
        if query_only:
            conn.execute("PRAGMA query_only = ON")
        if budget is not None:
            budget.install(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def is_busy(exc: sqlite3.Error) -> bool:
    """True for SQLITE_BUSY and its extended codes: another connection holds the lock."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF == sqlite3.SQLITE_BUSY
    return "locked" in str(exc)


def retry_while_busy(fn: Callable[[], T], busy_timeout_ms: int) -> T:
    """``fn()``, tried again while it fails with SQLITE_BUSY, for up to busy_timeout_ms.

    For the statements on which SQLite returns SQLITE_BUSY at once instead of calling the
    busy handler: those that would promote a read lock to a write lock while another
    connection holds the write lock (waiting could deadlock). ``PRAGMA journal_mode = WAL``
    on a new file is one: it reads the header, then rewrites it; when several processes
    open a new store at once, all but one get "database is locked" at once. Tried again
    after the first has switched the file to WAL, it has nothing left to write.
    """
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(lambda exc: isinstance(exc, sqlite3.OperationalError) and is_busy(exc)),
        stop=tenacity.stop_after_delay(busy_timeout_ms / 1000),
        wait=tenacity.wait_random_exponential(multiplier=0.002, max=0.05),
        before_sleep=tenacity.before_sleep_log(log, logging.DEBUG),
        reraise=True,
    )
    return retrying(fn)

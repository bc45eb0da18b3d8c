"""Where a unit of work's statements run: the one abstraction the repositories use.

``LoopSession`` runs each statement at once on the calling thread, the event loop's: the
statements of the hot path take microseconds, and a hop to a thread would cost more than
the statement. ``ThreadSession`` runs each through aiosqlite in its connection's own thread,
for reads that may take long: the loop serves other requests meanwhile. Both enforce the
connection's StatementBudget, if it has one: a statement past it is interrupted and
becomes QueryTimedOut (a 503), never a hung loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import aiosqlite

from adapters.sqlite.connection import StatementBudget, is_interrupt
from core.domain.errors import QueryTimedOut

Params = Sequence[Any] | Mapping[str, Any]
Row = tuple[Any, ...]


class Session(Protocol):
    """What a repository needs from its unit of work: its statements run, wherever the unit
    says. Each call is one statement; the unit's state (a statement after its block, or
    after SQLite gave its transaction up, is refused) is checked at every call."""

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        """Every row the statement returns."""

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run a statement that returns no rows; how many rows it changed."""

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        """The statement once per parameter set."""


def _timed_out(budget: StatementBudget) -> QueryTimedOut:
    return QueryTimedOut(round(budget.seconds * 1000))


class LoopSession:
    """Statements on the calling thread; ``connection`` is the unit's gate (it refuses a
    statement out of turn, and for write units opens the next savepoint after a commit)."""

    def __init__(self, connection: Callable[[], Awaitable[sqlite3.Connection]], budget: StatementBudget | None):
        self._connection = connection
        self._budget = budget

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        conn = await self._connection()
        budget = self._budget
        if budget is None:
            return conn.execute(sql, params).fetchall()
        budget.start()
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if is_interrupt(exc):
                raise _timed_out(budget) from None
            raise
        finally:
            budget.stop()

    async def execute(self, sql: str, params: Params = ()) -> int:
        conn = await self._connection()
        return conn.execute(sql, params).rowcount

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        conn = await self._connection()
        conn.executemany(sql, rows)


class ThreadSession:
    """Statements through aiosqlite, in the thread of ``connection()``'s connection, each
    within ``budget`` (set for that connection when it was opened). For read-only units:
    ``execute`` and ``executemany`` exist for the Protocol, and the connection refuses writes."""

    def __init__(self, connection: Callable[[], aiosqlite.Connection], budget: StatementBudget):
        self._connection = connection
        self._budget = budget

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        conn = self._connection()
        # Started here, on the loop, for a statement that starts at once in the thread: each
        # of these connections serves one unit at a time, so nothing queues before it.
        self._budget.start()
        try:
            return [tuple(row) for row in await conn.execute_fetchall(sql, params)]
        except sqlite3.OperationalError as exc:
            if is_interrupt(exc):
                raise _timed_out(self._budget) from None
            raise
        except asyncio.CancelledError:
            # The statement would go on in its thread, and hold the connection, until done.
            await conn.interrupt()
            raise
        finally:
            self._budget.stop()

    async def execute(self, sql: str, params: Params = ()) -> int:
        cursor = await self._connection().execute(sql, params)
        return cursor.rowcount

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        await self._connection().executemany(sql, rows)

"""The SQLite unit of work: a savepoint inside the database's current write batch, or,
read-only, nothing at all (each statement of the reader connection is its own snapshot)."""

from __future__ import annotations

import enum
import sqlite3
from types import TracebackType
from typing import TYPE_CHECKING

from adapters.sqlite.repositories import (
    SqliteAuditLog,
    SqliteIdempotencyRepository,
    SqliteOrderRepository,
    SqliteOutbox,
    SqlitePaymentRepository,
    SqliteProductRepository,
    SqliteProviderEvents,
    SqliteRefreshTokenRepository,
    SqliteRefundRepository,
    SqliteUserRepository,
)
from core.ports.idempotency import KEY_LIFETIME, IdempotencyKeyTaken, current_claim

if TYPE_CHECKING:
    from adapters.sqlite.database import SqliteDatabase


class _State(enum.Enum):
    NEW = "new"
    ACTIVE = "active"
    COMMITTED = "committed"
    FINISHED = "finished"


class SqliteUnitOfWork:
    users: SqliteUserRepository
    products: SqliteProductRepository
    refresh_tokens: SqliteRefreshTokenRepository
    audit: SqliteAuditLog
    orders: SqliteOrderRepository
    payments: SqlitePaymentRepository
    refunds: SqliteRefundRepository
    outbox: SqliteOutbox
    provider_events: SqliteProviderEvents
    idempotency: SqliteIdempotencyRepository

    def __init__(self, db: SqliteDatabase, *, readonly: bool):
        self._db = db
        self._readonly = readonly
        self._state = _State.NEW
        self._conn: sqlite3.Connection | None = None

    @property
    def readonly(self) -> bool:
        return self._readonly

    async def connection(self) -> sqlite3.Connection:
        """The connection for the next statement. After a commit, the next statement starts a
        new savepoint (writes after a commit need another commit, as in the fake); after the
        block, nothing may run: a stray statement never runs outside its transaction."""
        conn = self._conn
        if self._state is _State.ACTIVE and conn is not None:
            if not self._readonly and not conn.in_transaction:
                # SQLite rolled the whole batch back (disk full, I/O error): nothing more
                # may run, or it would run in autocommit mode.
                raise self._db._batch_lost_error()
            return conn
        if self._state is _State.COMMITTED:
            self._conn = conn = await self._db._begin_unit()
            self._state = _State.ACTIVE
            return conn
        raise RuntimeError(f"This unit of work is {self._state.value}; open a new one.")

    async def __aenter__(self) -> SqliteUnitOfWork:
        if self._state is not _State.NEW:
            raise RuntimeError("A unit of work is entered once; open a new one.")
        self._conn = self._db.reader_connection() if self._readonly else await self._db._begin_unit()
        self._state = _State.ACTIVE
        self.users = SqliteUserRepository(self)
        self.products = SqliteProductRepository(self)
        self.refresh_tokens = SqliteRefreshTokenRepository(self)
        self.audit = SqliteAuditLog(self)
        self.orders = SqliteOrderRepository(self)
        self.payments = SqlitePaymentRepository(self)
        self.refunds = SqliteRefundRepository(self)
        self.outbox = SqliteOutbox(self)
        self.provider_events = SqliteProviderEvents(self)
        self.idempotency = SqliteIdempotencyRepository(self)
        return self

    async def commit(self) -> None:
        """Returns once the changes are durable (fsynced) and visible to new readers."""
        if self._readonly:
            raise RuntimeError("commit() in a read-only unit of work")
        if self._state is _State.COMMITTED:
            return  # nothing was written since the last commit
        conn = await self.connection()
        claim = current_claim.get()
        if claim is not None and not claim.recorded:
            # In the transaction of the effect: both are kept, or neither.
            now = self._db.clock.now()
            if not await self.idempotency.claim(claim, now, now - KEY_LIFETIME):
                raise IdempotencyKeyTaken()  # leaving the block rolls this unit back whole
            claim.recorded = True
        conn.execute("RELEASE uow")
        self._state = _State.COMMITTED
        await self._db._commit_unit()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        state, self._state = self._state, _State.FINISHED
        if self._readonly or state is not _State.ACTIVE:
            return
        # Left without commit (an exception, or simply no commit): undo this unit's
        # statements only; the units already released into the batch keep theirs.
        conn = self._conn
        assert conn is not None
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK TO uow")
                conn.execute("RELEASE uow")
        except sqlite3.Error:
            # The savepoint is gone, so the batch is in an unknown state: give it up whole.
            conn.execute("ROLLBACK")
        finally:
            if not conn.in_transaction:
                self._db._fail_batch()
            self._db._rollback_unit()

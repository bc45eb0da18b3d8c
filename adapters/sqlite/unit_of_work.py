"""The SQLite unit of work: a savepoint inside the database's current write batch, or,
read-only, a read transaction of its own on a reader connection held from its start to its
end, so that all its reads see one snapshot. Its statements run on the event loop (a
LoopSession), or, for a read-only unit that may be slow, through aiosqlite in the reader's
own thread (a ThreadSession); the repositories see one Session either way."""

from __future__ import annotations

import enum
import sqlite3
from types import TracebackType
from typing import TYPE_CHECKING

import aiosqlite

from adapters.sqlite.repositories import (
    SqliteApiKeyRepository,
    SqliteAuditLog,
    SqliteAuthorizationCodeRepository,
    SqliteConsentRepository,
    SqliteIdempotencyRepository,
    SqliteOAuthClientRepository,
    SqliteOrderRepository,
    SqliteOutbox,
    SqlitePaymentRepository,
    SqliteProductRepository,
    SqliteProviderEvents,
    SqliteRefreshTokenRepository,
    SqliteRefundRepository,
    SqliteRevokedSessions,
    SqliteUserRepository,
)
from adapters.sqlite.session import LoopSession, Session, ThreadSession
from core.ports.idempotency import record_current_claim
from core.ports.unit_of_work import count_commit

if TYPE_CHECKING:
    from adapters.sqlite.database import SqliteDatabase, _Reader, _SlowReader


class _State(enum.Enum):
    NEW = "new"
    ACTIVE = "active"
    COMMITTED = "committed"
    FINISHED = "finished"


class SqliteUnitOfWork:
    users: SqliteUserRepository
    products: SqliteProductRepository
    refresh_tokens: SqliteRefreshTokenRepository
    revoked_sessions: SqliteRevokedSessions
    api_keys: SqliteApiKeyRepository
    audit: SqliteAuditLog
    orders: SqliteOrderRepository
    payments: SqlitePaymentRepository
    refunds: SqliteRefundRepository
    outbox: SqliteOutbox
    provider_events: SqliteProviderEvents
    idempotency: SqliteIdempotencyRepository
    oauth_clients: SqliteOAuthClientRepository
    authorization_codes: SqliteAuthorizationCodeRepository
    consents: SqliteConsentRepository
    session: Session  # what the repositories run their statements through

    def __init__(self, db: SqliteDatabase, *, readonly: bool, slow: bool = False):
        if slow and not readonly:
            raise ValueError("Only a read-only unit of work may be slow.")
        self._db = db
        self._readonly = readonly
        self._slow = slow
        self._state = _State.NEW
        self._conn: sqlite3.Connection | None = None
        self._reader: _Reader | None = None
        self._slow_reader: _SlowReader | None = None

    @property
    def readonly(self) -> bool:
        return self._readonly

    async def connection(self) -> sqlite3.Connection:
        """The connection for the next statement run on the loop. After a commit, the next
        statement starts a new savepoint (writes after a commit need another commit, as in
        the fake); after the block, nothing may run: a stray statement never runs outside
        its transaction."""
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

    def _thread_connection(self) -> aiosqlite.Connection:
        """The same gate for a slow unit's statements, which run in its reader's thread."""
        if self._state is _State.ACTIVE and self._slow_reader is not None:
            return self._slow_reader.conn
        raise RuntimeError(f"This unit of work is {self._state.value}; open a new one.")

    async def __aenter__(self) -> SqliteUnitOfWork:
        if self._state is not _State.NEW:
            raise RuntimeError("A unit of work is entered once; open a new one.")
        if self._slow:
            self._slow_reader = slow = await self._db._slow_readers.acquire()
            try:
                await slow.conn.execute("BEGIN")  # deferred: the snapshot is taken by the first read
            except BaseException:
                self._db._slow_readers.discard()
                await slow.conn.close()
                raise
            self.session = ThreadSession(self._thread_connection, slow.budget)
        elif self._readonly:
            self._reader = reader = await self._db._readers.acquire()
            reader.conn.execute("BEGIN")
            self._conn = reader.conn
            self.session = LoopSession(self.connection, reader.budget)
        else:
            self._conn = await self._db._begin_unit()
            self.session = LoopSession(self.connection, None)
        self._state = _State.ACTIVE
        session = self.session
        self.users = SqliteUserRepository(session)
        self.products = SqliteProductRepository(session)
        self.refresh_tokens = SqliteRefreshTokenRepository(session)
        self.revoked_sessions = SqliteRevokedSessions(session)
        self.api_keys = SqliteApiKeyRepository(session)
        self.audit = SqliteAuditLog(session)
        self.orders = SqliteOrderRepository(session)
        self.payments = SqlitePaymentRepository(session)
        self.refunds = SqliteRefundRepository(session)
        self.outbox = SqliteOutbox(session)
        self.provider_events = SqliteProviderEvents(session)
        self.idempotency = SqliteIdempotencyRepository(session)
        self.oauth_clients = SqliteOAuthClientRepository(session)
        self.authorization_codes = SqliteAuthorizationCodeRepository(session)
        self.consents = SqliteConsentRepository(session)
        return self

    async def commit(self) -> None:
        """Returns once the changes are durable (fsynced) and visible to new readers."""
        if self._readonly:
            raise RuntimeError("commit() in a read-only unit of work")
        if self._state is _State.COMMITTED:
            return  # nothing was written since the last commit
        conn = await self.connection()
        # In the transaction of the effect: both are kept, or neither (IdempotencyKeyTaken:
        # leaving the block rolls this unit back whole).
        await record_current_claim(self.idempotency, self._db.clock.now())
        conn.execute("RELEASE uow")
        self._state = _State.COMMITTED
        await self._db._commit_unit()
        count_commit()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        state, self._state = self._state, _State.FINISHED
        if self._slow_reader is not None:
            await self._end_slow_read(self._slow_reader)
        elif self._reader is not None:
            self._end_read(self._reader)
        elif state is _State.ACTIVE:
            self._roll_back_unit()

    def _end_read(self, reader: _Reader) -> None:
        try:
            if reader.conn.in_transaction:
                reader.conn.execute("COMMIT")  # a read transaction: ends the snapshot, writes nothing
        except BaseException:
            self._db._readers.discard()
            reader.conn.close()
            raise
        if not self._db._readers.release(reader):
            reader.conn.close()  # the database closed meanwhile

    async def _end_slow_read(self, reader: _SlowReader) -> None:
        try:
            if reader.conn.in_transaction:
                await reader.conn.execute("COMMIT")
        except BaseException:
            # Cancelled, or failed: the connection's state is not known, so it is not reused.
            self._db._slow_readers.discard()
            await reader.conn.interrupt()
            await reader.conn.close()
            raise
        if not self._db._slow_readers.release(reader):
            await reader.conn.close()

    def _roll_back_unit(self) -> None:
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

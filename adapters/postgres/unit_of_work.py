"""The PostgreSQL unit of work: one transaction on one pooled connection.

A write unit runs at READ COMMITTED and reads rows FOR UPDATE (the repositories do): a row
a write unit has read is locked until it ends, so two units that read, change and save the
same product, order or payment run one after the other, on one instance or on several,
and the second reads what the first committed. That is what stops an oversell: a unit
placing an order locks the products it takes stock from (in id order, so that two such
units cannot deadlock) and sees the stock the previous order left. Likewise a unit locks
an order before any of its payments or refunds, whichever it reads first (repositories.py,
ORDER_LOCK), so that paying, refunding and settling the same order queue rather than
deadlock. Conditional updates
alone (``UPDATE ... WHERE version = $n``) would also never oversell, but the loser of each
race would fail with ConcurrentUpdate where it could simply have waited its turn.

A read-only unit runs at REPEATABLE READ, READ ONLY: all its reads see the snapshot of its
first read, and it takes no locks.

Every statement runs within a budget (``statement_timeout``, set for the transaction):
the read budget for read-only units, the slow-read budget for slow ones, and for write
units the busy timeout, which bounds how long one waits for another's row lock.

PostgreSQL's own errors become the domain's: a statement past its budget is QueryTimedOut
(or, for a write unit waiting for a lock, database_busy); a lost or refused connection is
database_unavailable; a deadlock or a serialization failure is TransactionConflict, after
which nothing of the unit was kept and the whole use case may run again.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import asyncpg

from adapters.postgres.repositories import (
    PostgresApiKeyRepository,
    PostgresAuditLog,
    PostgresAuthorizationCodeRepository,
    PostgresConsentRepository,
    PostgresIdempotencyRepository,
    PostgresOAuthClientRepository,
    PostgresOrderRepository,
    PostgresOutbox,
    PostgresPaymentRepository,
    PostgresProductRepository,
    PostgresProviderEvents,
    PostgresRefreshTokenRepository,
    PostgresRefundRepository,
    PostgresRevokedSessions,
    PostgresUserRepository,
)
from core.domain.errors import QueryTimedOut, TransactionConflict, Unavailable, ValidationFailed
from core.ports.idempotency import record_current_claim
from core.ports.unit_of_work import count_commit

if TYPE_CHECKING:
    from adapters.postgres.database import PostgresDatabase


class _State(enum.Enum):
    NEW = "new"
    ACTIVE = "active"
    COMMITTED = "committed"
    FINISHED = "finished"


def database_unavailable() -> Unavailable:
    return Unavailable("The database cannot be reached; try again.", code="database_unavailable", retry_after=1)


#: Errors that mean the connection (or the server) is gone, not that a statement was wrong.
_CONNECTION_ERRORS = (
    OSError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)


def _is_gone(exc: asyncpg.InterfaceError) -> bool:
    """An InterfaceError that says the connection went away (the server ended it, and asyncpg
    gave it back to the pool), not one that says a statement was used wrongly."""
    text = str(exc)
    return "released back to the pool" in text or "connection is closed" in text or "closed in the middle" in text


class PgSession:
    """What a repository needs from its unit of work: statements run on the unit's connection,
    within its transaction, with PostgreSQL's errors translated for the domain. ``locking``
    says whether reads of entities take row locks (write units)."""

    def __init__(self, unit: PostgresUnitOfWork, locking: bool):
        self._unit = unit
        self.locking = locking
        self.locked_orders: set[str] = set()  # orders this unit has locked (it holds them to its end)

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await self._unit.connection()
        try:
            return await conn.fetch(sql, *args)
        except BaseException as exc:
            raise self._unit.translate(exc) from exc

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        conn = await self._unit.connection()
        try:
            return await conn.fetchrow(sql, *args)
        except BaseException as exc:
            raise self._unit.translate(exc) from exc

    async def fetchval(self, sql: str, *args: Any) -> Any:
        conn = await self._unit.connection()
        try:
            return await conn.fetchval(sql, *args)
        except BaseException as exc:
            raise self._unit.translate(exc) from exc

    async def execute(self, sql: str, *args: Any, guarded: bool = False) -> int:
        """Run a statement; how many rows it changed. ``guarded``: for a statement whose
        failure the use case may catch and go on from (an update to a taken sku): it runs in
        a savepoint, since PostgreSQL refuses every statement after an error otherwise."""
        conn = await self._unit.connection()
        try:
            if guarded:
                await conn.execute("SAVEPOINT guarded")
                try:
                    status = await conn.execute(sql, *args)
                except asyncpg.PostgresError:
                    await conn.execute("ROLLBACK TO SAVEPOINT guarded; RELEASE SAVEPOINT guarded")
                    raise
                await conn.execute("RELEASE SAVEPOINT guarded")
            else:
                status = await conn.execute(sql, *args)
        except BaseException as exc:
            raise self._unit.translate(exc) from exc
        count = status.rpartition(" ")[2]
        return int(count) if count.isdigit() else 0

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        conn = await self._unit.connection()
        try:
            await conn.executemany(sql, rows)
        except BaseException as exc:
            raise self._unit.translate(exc) from exc


class PostgresUnitOfWork:
    users: PostgresUserRepository
    products: PostgresProductRepository
    refresh_tokens: PostgresRefreshTokenRepository
    revoked_sessions: PostgresRevokedSessions
    api_keys: PostgresApiKeyRepository
    audit: PostgresAuditLog
    orders: PostgresOrderRepository
    payments: PostgresPaymentRepository
    refunds: PostgresRefundRepository
    outbox: PostgresOutbox
    provider_events: PostgresProviderEvents
    idempotency: PostgresIdempotencyRepository
    oauth_clients: PostgresOAuthClientRepository
    authorization_codes: PostgresAuthorizationCodeRepository
    consents: PostgresConsentRepository

    def __init__(self, db: PostgresDatabase, *, readonly: bool, slow: bool = False):
        if slow and not readonly:
            raise ValueError("Only a read-only unit of work may be slow.")
        self._db = db
        self._readonly = readonly
        self._slow = slow
        self._state = _State.NEW
        self._conn: asyncpg.Connection | None = None
        self._holds_slow_slot = False
        self._session: PgSession | None = None
        if slow:
            self._budget_ms = db.slow_read_budget_ms
        elif readonly:
            self._budget_ms = db.read_budget_ms
        else:
            self._budget_ms = db.busy_timeout_ms
        mode = "ISOLATION LEVEL REPEATABLE READ READ ONLY" if readonly else "ISOLATION LEVEL READ COMMITTED"
        # One round trip: the transaction and its statement budget.
        self._begin = f"BEGIN {mode}; SET LOCAL statement_timeout = {int(self._budget_ms)}"

    @property
    def readonly(self) -> bool:
        return self._readonly

    async def connection(self) -> asyncpg.Connection:
        """The connection for the next statement. After a commit, the next statement starts a
        new transaction (writes after a commit need another commit); after the block, nothing
        may run."""
        conn = self._conn
        if self._state is _State.ACTIVE and conn is not None:
            return conn
        if self._state is _State.COMMITTED and conn is not None:
            await self._start(conn)
            self._state = _State.ACTIVE
            return conn
        raise RuntimeError(f"This unit of work is {self._state.value}; open a new one.")

    async def _start(self, conn: asyncpg.Connection) -> None:
        try:
            await conn.execute(self._begin)
        except BaseException as exc:
            raise self.translate(exc) from exc

    def translate(self, exc: BaseException) -> BaseException:
        """The domain's error for a PostgreSQL error (the same exception if it has none)."""
        if isinstance(exc, asyncpg.TooManyConnectionsError | asyncpg.InsufficientResourcesError):
            return Unavailable(
                "The database has no connection to spare; try again.", code="database_busy", retry_after=1
            )
        if (isinstance(exc, asyncpg.InterfaceError) and _is_gone(exc)) or isinstance(exc, asyncpg.InternalClientError):
            # InternalClientError: asyncpg's protocol met a connection in a state it cannot go
            # on from, which is what a connection the server is ending looks like mid-statement.
            return database_unavailable()
        if isinstance(exc, asyncpg.CharacterNotInRepertoireError | asyncpg.UntranslatableCharacterError):
            # The entry points refuse NUL characters in what they are sent; this is the last
            # line, for a text that came another way.
            return ValidationFailed({"text": "cannot contain a NUL character"})
        if isinstance(exc, asyncpg.QueryCanceledError):
            if self._readonly:
                return QueryTimedOut(self._budget_ms)
            return Unavailable(
                "The database is busy with other writes to the same records; try again.",
                code="database_busy",
                retry_after=1,
            )
        if isinstance(exc, asyncpg.DeadlockDetectedError | asyncpg.SerializationError):
            return TransactionConflict()
        if isinstance(exc, _CONNECTION_ERRORS):
            return database_unavailable()
        return exc

    async def __aenter__(self) -> PostgresUnitOfWork:
        if self._state is not _State.NEW:
            raise RuntimeError("A unit of work is entered once; open a new one.")
        pool = self._db.pool()
        if self._slow:
            await self._db._slow_units.acquire()
            self._holds_slow_slot = True
        try:
            try:
                conn = await pool.acquire(timeout=self._db.busy_timeout_ms / 1000)
            except TimeoutError:
                raise Unavailable(
                    "Every database connection is in use; try again.", code="database_busy", retry_after=1
                ) from None
            except BaseException as exc:
                raise self.translate(exc) from exc
            try:
                await self._start(conn)
            except BaseException:
                await self._release(conn)
                raise
        except BaseException:
            self._release_slow_slot()
            raise
        self._conn = conn
        self._state = _State.ACTIVE
        session = self._session = PgSession(self, locking=not self._readonly)
        self.users = PostgresUserRepository(session)
        self.products = PostgresProductRepository(session)
        self.refresh_tokens = PostgresRefreshTokenRepository(session)
        self.revoked_sessions = PostgresRevokedSessions(session)
        self.api_keys = PostgresApiKeyRepository(session)
        self.audit = PostgresAuditLog(session)
        self.orders = PostgresOrderRepository(session)
        self.payments = PostgresPaymentRepository(session)
        self.refunds = PostgresRefundRepository(session)
        self.outbox = PostgresOutbox(session)
        self.provider_events = PostgresProviderEvents(session)
        self.idempotency = PostgresIdempotencyRepository(session)
        self.oauth_clients = PostgresOAuthClientRepository(session)
        self.authorization_codes = PostgresAuthorizationCodeRepository(session)
        self.consents = PostgresConsentRepository(session)
        return self

    async def commit(self) -> None:
        """Returns once PostgreSQL has committed (durable by the server's own settings:
        synchronous_commit, replication). The database announces it to the other instances
        right after (PostgresDatabase.committed)."""
        if self._readonly:
            raise RuntimeError("commit() in a read-only unit of work")
        if self._state is _State.COMMITTED:
            return  # nothing was written since the last commit
        conn = await self.connection()
        # In the transaction of the effect: both are kept, or neither (IdempotencyKeyTaken:
        # leaving the block rolls this unit back whole).
        await record_current_claim(self.idempotency, self._db.clock.now())
        try:
            await conn.execute("COMMIT")
        except BaseException as exc:
            self._state = _State.FINISHED
            error = self.translate(exc)
            if isinstance(error, Unavailable) and error.code == "database_unavailable":
                # The connection went during COMMIT: it may or may not have been applied.
                failure = Unavailable("The database could not save the changes.", code="commit_failed")
                raise failure from exc
            raise error from exc
        self._state = _State.COMMITTED
        if self._session is not None:
            self._session.locked_orders.clear()  # released by the commit
        self._db.committed()
        count_commit()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        state, self._state = self._state, _State.FINISHED
        conn, self._conn = self._conn, None
        try:
            if conn is not None and state is _State.ACTIVE:
                if not self._readonly:
                    self._db.stats.units_rolled_back += 1
                try:
                    await conn.execute("ROLLBACK")
                except BaseException:
                    # Gone (the server rolled it back), refused, or cancelled meanwhile: its
                    # state is not known, so it is not reused, and a cancellation goes on.
                    _terminate(conn)
                    raise
        except (*_CONNECTION_ERRORS, asyncpg.InterfaceError, asyncpg.PostgresError):
            pass  # the transaction is gone with the connection: nothing more to undo
        finally:
            try:
                if conn is not None:
                    await self._release(conn)
            finally:
                self._release_slow_slot()

    async def _release(self, conn: asyncpg.Connection) -> None:
        try:
            await self._db.pool().release(conn)
        except Unavailable:
            _terminate(conn)  # the pool closed meanwhile
        except asyncpg.InterfaceError:
            pass  # asyncpg already took it back (the server ended it)

    def _release_slow_slot(self) -> None:
        if self._holds_slow_slot:
            self._holds_slow_slot = False
            self._db._slow_units.release()


def _terminate(conn: asyncpg.Connection) -> None:
    try:
        conn.terminate()
    except asyncpg.InterfaceError:
        pass  # asyncpg already took it back

"""The unit of work: one transaction, with the repositories that take part in it."""

from __future__ import annotations

from contextvars import ContextVar
from types import TracebackType
from typing import Any, Protocol

from core.ports.idempotency import IdempotencyRepository
from core.ports.repositories import (
    ApiKeyRepository,
    AuditLog,
    AuthorizationCodeRepository,
    ConsentRepository,
    OAuthClientRepository,
    OrderRepository,
    Outbox,
    PaymentRepository,
    ProductRepository,
    ProviderEvents,
    RefreshTokenRepository,
    RefundRepository,
    RevokedSessions,
    UserRepository,
)

#: How many units of work have committed in the current context (an entry point's request,
#: and the use cases it runs): every store's ``commit()`` adds one when it returns. An entry
#: point that runs a use case again after a TransactionConflict does so only while this has
#: not moved: nothing of that use case was kept, so running it again is running it once.
commits_in_context: ContextVar[int] = ContextVar("commits_in_context", default=0)


def count_commit() -> None:
    """What a store's ``commit()`` calls once the unit is committed."""
    commits_in_context.set(commits_in_context.get() + 1)


class UnitOfWork(Protocol):
    """Use as ``async with uow_factory() as uow: ...; await uow.commit()``.

    Leaving the block without ``commit()`` rolls everything back, so a use case that
    raises half-way leaves nothing half-written. ``commit()`` returns once the changes
    are durable.
    """

    # Read-only properties rather than attributes, so that an adapter's own repository
    # types satisfy the protocol (a mutable attribute would have to be exactly this type).
    @property
    def users(self) -> UserRepository: ...

    @property
    def products(self) -> ProductRepository: ...

    @property
    def refresh_tokens(self) -> RefreshTokenRepository: ...

    @property
    def revoked_sessions(self) -> RevokedSessions: ...

    @property
    def api_keys(self) -> ApiKeyRepository: ...

    @property
    def audit(self) -> AuditLog: ...

    @property
    def orders(self) -> OrderRepository: ...

    @property
    def payments(self) -> PaymentRepository: ...

    @property
    def refunds(self) -> RefundRepository: ...

    @property
    def outbox(self) -> Outbox: ...

    @property
    def provider_events(self) -> ProviderEvents: ...

    @property
    def idempotency(self) -> IdempotencyRepository: ...

    @property
    def oauth_clients(self) -> OAuthClientRepository: ...

    @property
    def authorization_codes(self) -> AuthorizationCodeRepository: ...

    @property
    def consents(self) -> ConsentRepository: ...

    async def commit(self) -> None:
        """Durable when it returns (and counted in ``commits_in_context``). If an idempotency claim is current (see
        core/ports/idempotency.py) and not yet recorded, it is recorded in this same
        transaction; if another request recorded the same key first, raises
        IdempotencyKeyTaken and nothing of this unit of work is kept."""

    async def __aenter__(self) -> UnitOfWork: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self, *, readonly: bool = False, slow: bool = False) -> UnitOfWork:
        """A fresh unit of work.

        ``readonly=True`` promises no writes (``commit()`` is a programming error). In
        exchange the unit does not queue behind writers, and every read it makes sees one
        consistent snapshot of the store, as of its first read: what other units commit
        meanwhile is not seen, in whole or in part, until a later unit.

        What a unit sees: a read-only unit, every unit whose ``commit()`` returned before its
        first read. A write unit, also every unit whose commit is ordered before it, even if
        that ``commit()`` has not returned yet: a store that makes commits durable in groups
        (SQLite's group commit) orders a unit after those of the open group, and one that
        commits each transaction on its own (PostgreSQL) has no such units. So a use case
        that must see what a concurrent request has just committed (the idempotency claim of
        a copy of its request) reads in a write unit.
        Rows a write unit reads are its own until it ends: a write unit that reads an entity
        and saves it never loses a concurrent unit's update of it (the store serializes them,
        by one writer at a time or by row locks) and so never meets ConcurrentUpdate for a
        change made after its read; ConcurrentUpdate is for a copy read in an earlier unit.

        Every read has a time budget (the adapter's setting); a read past it is stopped
        and raises QueryTimedOut (an Unavailable), and nothing else is affected. The
        budget protects the other requests: a store whose reads run on the caller's thread
        (the event loop) would otherwise hold every request up for as long as one read.

        ``slow=True``, for read-only units only (ValueError otherwise), says that the reads
        may take long: a text search, a filtered administrative list, the audit log. The
        unit gets the larger budget for slow reads, and a store whose reads otherwise run
        on the caller's thread runs this unit's reads elsewhere, so that the event loop
        serves other requests meanwhile. A store that runs every read off the event loop
        anyway treats both kinds alike but for the budget. Results are the same either way.
        """

    def change_counter(self) -> int:
        """The store's version as this process knows it: a number that changes whenever a
        unit of work commits. Commits of this process count at once; those of other
        processes and instances sharing the store within ``change_latency`` seconds (each
        store keeps this in its own way: SQLite polls ``PRAGMA data_version``, PostgreSQL
        hears a notification). Equal numbers mean nothing was committed in between, to that
        precision. Cheap, with no I/O on the caller's thread: callers use it on every request
        to tell whether something they derived (a rendered page) is current."""

    def check_ready(self) -> dict[str, Any]:
        """For /readyz: cheap and synchronous (no I/O on the caller's thread). What the store
        reports of itself when it answers at the schema version this code needs; raises
        Unavailable otherwise (within a second or two of the store going away, and no
        longer once it is back)."""

    @property
    def change_latency(self) -> float:
        """How long, at most, another instance's commit takes to move ``change_counter()``
        while the store is reachable (seconds)."""

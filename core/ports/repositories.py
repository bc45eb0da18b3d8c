"""Repositories: collections of domain objects, hung off a unit of work.

Every adapter (in-memory fake, SQLite, PostgreSQL) passes the same contract
suite in ``tests/contract``; that suite is the precise meaning of these docstrings.

Lists are pages (core/domain/pagination.py): ``page.after`` is None for the first page or
the ``next_after`` of the previous one, an opaque cursor that the adapter made and binds to
the list, its sort and its filters. A cursor the adapter did not make for exactly this
list, sort and filters raises InvalidCursor; it is never read as a first page. Every order
is total (ties are broken by id), so pages never overlap or skip an item that stays put.
"""

from __future__ import annotations

import builtins
import enum
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple, Protocol

import attrs

from core.domain.api_keys import ApiKey
from core.domain.audit import AuditEntry
from core.domain.catalog import Product
from core.domain.events import DomainEvent
from core.domain.grants import AuthorizationCode, Consent
from core.domain.oauth import ClientStatus, OAuthClient
from core.domain.orders import Order, OrderStatus
from core.domain.pagination import Page, PageRequest
from core.domain.payments import Payment, Refund
from core.domain.users import RefreshToken, Role, User, UserStatus


@attrs.frozen
class UserFilter:
    role: Role | None = None
    status: UserStatus | None = None
    email: str | None = None  # exact, normalized


@attrs.frozen
class ProductFilter:
    active: bool | None = None
    price_min: int | None = None  # inclusive, minor units
    price_max: int | None = None  # inclusive, minor units
    text: str | None = None  # free text; adapters make it safe for their search engine


class ProductSort(enum.Enum):
    """The orders of a product list. Ties (equal prices, names or times) are broken by id,
    and a descending order is the exact reverse of its ascending one (ties by id descending).
    Names compare by code point once A-Z are lowered to a-z (and nothing else is changed),
    which any store can do with an index."""

    ID = "id"  # creation order, to the id generator's precision: ids compare as bytes in every store
    PRICE = "price"
    PRICE_DESC = "-price"
    NAME = "name"
    NAME_DESC = "-name"
    CREATED_AT = "created_at"
    CREATED_AT_DESC = "-created_at"


class ProductVersion(NamedTuple):
    """Which version of which product: enough to tell whether a copy is current. A
    NamedTuple, not attrs: a catalog page makes 20 and it is the hot path (3x cheaper)."""

    id: str
    version: int


@attrs.frozen
class OrderFilter:
    customer_id: str | None = None
    status: OrderStatus | None = None


class OrderSummary(NamedTuple):
    """How many orders, and what they are worth together (minor units of one currency)."""

    orders: int
    total: int


@attrs.frozen
class ApiKeyFilter:
    user_id: str | None = None  # None: every user's keys (for admins and the operator)


@attrs.frozen
class AuditFilter:
    actor_id: str | None = None
    action: str | None = None
    object_type: str | None = None
    object_id: str | None = None


@attrs.frozen
class OAuthClientFilter:
    status: ClientStatus | None = None


class UserRepository(Protocol):
    async def add(self, user: User) -> None:
        """Insert; raises EmailTaken if an account has the same (normalized) email or the
        same ``email_skeleton`` (an address that looks the same)."""

    async def get(self, user_id: str) -> User | None: ...

    async def get_by_email(self, email: str) -> User | None:
        """``email`` is already normalized."""

    async def update(self, user: User) -> None:
        """Persist role, status, password hash and updated_at."""

    async def list(self, page: PageRequest, filter: UserFilter) -> Page[User]:
        """Ordered by id ascending (creation order)."""

    async def count(self, filter: UserFilter) -> int:
        """How many users match. In a write unit of work the number holds until it commits:
        two write units that each count and then change a counted user's role or status
        never both commit on the strength of the same count (the store serializes them)."""


class ProductRepository(Protocol):
    async def add(self, product: Product) -> None:
        """Insert; raises SkuTaken if the sku exists."""

    async def add_many(self, products: Sequence[Product]) -> None:
        """Insert them all, as ``add`` would one after another, in as few statements as the
        store can: for imports of thousands, where a statement each would cost a round trip
        each. SkuTaken if a sku exists or comes twice; the unit of work must then not be
        committed (which of the others were inserted is not said)."""

    async def get(self, product_id: str) -> Product | None: ...

    async def get_by_sku(self, sku: str) -> Product | None: ...

    async def update(self, product: Product) -> None:
        """Persist every field, with the version check (and move) of OrderRepository.update.
        Raises SkuTaken (and nothing is written)."""

    async def delete(self, product_id: str) -> bool:
        """True if a product was deleted."""

    async def list(self, page: PageRequest, filter: ProductFilter, sort: ProductSort = ProductSort.ID) -> Page[Product]:
        """In the order ``sort`` says. ``filter.text`` matches words (and word prefixes) of
        name, sku and description; any text is safe, including the search engine's own
        syntax. A cursor of one sort (or filter) is InvalidCursor with another."""

    async def list_versions(
        self, page: PageRequest, filter: ProductFilter, sort: ProductSort = ProductSort.ID
    ) -> Page[ProductVersion]:
        """The ids and versions of exactly the page ``list`` returns, in the same order and
        with the same cursor: for callers that keep copies of products and only need to
        know which are current."""

    async def get_many(self, product_ids: Sequence[str]) -> builtins.list[Product]:
        """The products that exist among these ids, in no particular order."""

    async def get_many_by_sku(self, skus: Sequence[str]) -> builtins.list[Product]:
        """The products that exist among these skus (exact), in no particular order. A lookup:
        unlike ``get_many``, it does not make the rows the write unit's own (a use case that
        changes them reads them with ``get_many``)."""

    async def low_stock(self, threshold: int, limit: int) -> builtins.list[Product]:
        """At most ``limit`` active products with ``stock`` at or below ``threshold``, the
        lowest stock first (ties by id), at a cost that depends on ``limit``."""


class RefreshTokenRepository(Protocol):
    async def add(self, token: RefreshToken) -> None: ...

    async def get_by_digest(self, digest: str) -> RefreshToken | None: ...

    async def mark_used(self, token_id: str, at: datetime) -> bool:
        """Mark an unused, unrevoked token used; False if it was not (a replay)."""

    async def revoke_family(self, family_id: str, at: datetime) -> int:
        """Revoke every token of the family not yet revoked; returns how many."""

    async def revoke_all_for_user(self, user_id: str, at: datetime) -> int:
        """Revoke every token of the user not yet revoked; returns how many."""

    async def families_since(self, user_id: str, since: datetime) -> builtins.list[str]:
        """The families (sessions) of the user with a token made at or after ``since``."""

    async def client_families_since(self, client_id: str, user_id: str | None, since: datetime) -> builtins.list[str]:
        """The families of the OAuth client (of one user, or of all with ``user_id`` None)
        with a token made at or after ``since``."""

    async def revoke_client(self, client_id: str, user_id: str | None, at: datetime) -> int:
        """Revoke every token of the OAuth client not yet revoked (of one user, or of all with
        ``user_id`` None); returns how many."""


class AuthorizationCodeRepository(Protocol):
    """The codes of the authorization code grant (core/domain/grants.py)."""

    async def add(self, code: AuthorizationCode) -> None: ...

    async def get_by_digest(self, digest: str) -> AuthorizationCode | None: ...

    async def mark_used(self, code_id: str, at: datetime, family_id: str) -> bool:
        """Mark an unused code used, and the session its exchange began; False if it was used
        already (a replay, or a concurrent exchange that got there first)."""

    async def purge(self, before: datetime, limit: int) -> int:
        """Delete at most ``limit`` codes that expired before ``before``; returns how many."""


class ConsentRepository(Protocol):
    """Remembered consents, one per user and client."""

    async def get(self, user_id: str, client_id: str) -> Consent | None: ...

    async def put(self, consent: Consent) -> None:
        """Insert, or replace the user's consent for that client."""

    async def delete(self, user_id: str, client_id: str) -> bool:
        """False if there was none."""

    async def list_for_user(self, user_id: str) -> builtins.list[Consent]:
        """Ordered by client id (a user connects a handful of apps)."""


class ApiKeyRepository(Protocol):
    """Personal API keys. The secret is never here: only its keyed digest (of 256 random
    bits: no two keys have the same)."""

    async def add(self, key: ApiKey) -> None: ...

    async def get(self, key_id: str) -> ApiKey | None:
        """In a write unit, the key is the unit's own until it ends (see UnitOfWorkFactory)."""

    async def get_by_digest(self, digest: str) -> ApiKey | None:
        """The one lookup of every request a key makes: by an index of the digest."""

    async def list(self, page: PageRequest, filter: ApiKeyFilter) -> Page[ApiKey]:
        """Newest first (id descending)."""

    async def update(self, key: ApiKey) -> None:
        """Persist ``revoked_at`` and ``last_used_at`` (nothing else of a key changes)."""

    async def record_use(self, key_id: str, at: datetime, *, unless_since: datetime) -> bool:
        """Set ``last_used_at`` to ``at`` unless it is already after ``unless_since``;
        True if it was set. Only that column: a use recorded from a read made before a
        concurrent revocation never undoes it (as ``update`` of that copy would)."""


class EndedSession(NamedTuple):
    session_id: str
    until: datetime  # when the record is no longer needed


class SessionChanges(NamedTuple):
    ended: builtins.list[EndedSession]
    cursor: str  # opaque: pass it to the next call
    complete: bool  # False: more records follow, call again with the cursor


class RevokedSessions(Protocol):
    """Sign-in sessions that ended while access tokens issued to them may still be unexpired:
    an access token whose session is here is refused."""

    async def add(self, session_ids: Sequence[str], at: datetime, until: datetime) -> None:
        """Record that these sessions ended at ``at``; the record is needed until ``until``
        (when the last access token they were issued has expired). A session recorded
        already keeps its first record: recording it again adds nothing."""

    async def changes(self, cursor: str | None, now: datetime, limit: int) -> SessionChanges:
        """With ``cursor`` None: the records still needed at ``now``, at a cost that depends on
        how many those are (not on how many expired ones the store still keeps). With a
        cursor a previous call returned: the records made since. At most ``limit`` records
        a call; ``complete`` says whether the caller now has them all. Every record committed
        after one call's snapshot is returned by a later call given that call's cursor."""

    async def purge(self, before: datetime, limit: int) -> int:
        """Forget at most ``limit`` records needed only until before ``before``; returns how
        many (fewer than ``limit``: none are left)."""


class AuditLog(Protocol):
    async def append(self, entry: AuditEntry) -> None: ...

    async def list(self, page: PageRequest, filter: AuditFilter) -> Page[AuditEntry]:
        """Newest first (id descending)."""


class OrderRepository(Protocol):
    """Orders with their lines. Lines never change after the order is placed."""

    async def add(self, order: Order) -> None:
        """Insert the order and its lines (in their order)."""

    async def add_many(self, orders: Sequence[Order]) -> None:
        """Insert them all with their lines, as ``add`` would one after another, in as few
        statements as the store can (see ProductRepository.add_many)."""

    async def get(self, order_id: str) -> Order | None: ...

    async def get_many(self, order_ids: Sequence[str]) -> builtins.list[Order]:
        """The orders that exist among these ids, in no particular order."""

    async def update(self, order: Order) -> None:
        """Persist status, amount_paid, amount_refunded, updated_at and expires_at.

        Optimistic concurrency: ``order.version`` is the version the order was read at; the
        stored row must still be at it or ConcurrentUpdate is raised (nothing is written).
        On success the row and ``order.version`` move to the next version, so a use case
        may apply several transitions to an order and save it once."""

    async def list(self, page: PageRequest, filter: OrderFilter) -> Page[Order]:
        """Newest first (id descending)."""

    async def due_for_expiry(self, now: datetime, limit: int) -> builtins.list[str]:
        """Ids of at most ``limit`` orders awaiting payment whose ``expires_at`` is at or
        before ``now``, earliest deadline first. Orders without a deadline never appear."""

    async def summary_since(self, since: datetime, currency: str) -> OrderSummary:
        """The orders in ``currency`` placed at or after ``since`` that still stand (every
        status but cancelled and expired): how many, and the sum of their totals. At a cost
        that depends on how many orders were placed since, not on how many the store holds."""

    async def count_with_status(self, status: OrderStatus) -> int:
        """How many orders have this status, at a cost that depends on how many do."""


class PaymentRepository(Protocol):
    async def add(self, payment: Payment) -> None:
        """Insert; raises ProviderReferenceTaken if another payment has its provider reference."""

    async def add_many(self, payments: Sequence[Payment]) -> None:
        """Insert them all, as ``add`` would one after another, in as few statements as the
        store can (see ProductRepository.add_many). ProviderReferenceTaken if a provider
        reference is taken or comes twice; the unit of work must then not be committed."""

    async def get(self, payment_id: str) -> Payment | None: ...

    async def get_by_provider_reference(self, reference: str) -> Payment | None: ...

    async def list_for_order(self, order_id: str) -> builtins.list[Payment]:
        """Every payment of the order, oldest first (id ascending)."""

    async def update(self, payment: Payment) -> None:
        """Persist status, provider_reference, client_secret, next_action, failure_code and
        updated_at, with the version check (and move) of OrderRepository.update.
        Raises ProviderReferenceTaken."""


class RefundRepository(Protocol):
    async def add(self, refund: Refund) -> None: ...

    async def add_many(self, refunds: Sequence[Refund]) -> None:
        """Insert them all, as ``add`` would one after another, in as few statements as the
        store can (see ProductRepository.add_many)."""

    async def get(self, refund_id: str) -> Refund | None: ...

    async def list_for_order(self, order_id: str) -> builtins.list[Refund]:
        """Every refund of the order, oldest first (id ascending)."""

    async def list_for_payment(self, payment_id: str) -> builtins.list[Refund]:
        """Every refund of the payment, oldest first (id ascending)."""

    async def list_unsent(self, created_after: datetime, created_before: datetime, limit: int) -> builtins.list[Refund]:
        """Pending refunds the provider never acknowledged (no provider reference) created in
        the half-open window (created_after, created_before), oldest first."""

    async def count_pending(self) -> int:
        """How many refunds are pending (asked of the provider, or about to be, and not yet
        settled), at a cost that depends on how many are."""

    async def update(self, refund: Refund) -> None:
        """Persist status, provider_reference, failure_code and updated_at, with the
        version check (and move) of OrderRepository.update."""


class Outbox(Protocol):
    """Domain events, appended in the transaction of the change they describe."""

    async def append(self, event: DomainEvent) -> None: ...

    async def list_pending(self, limit: int) -> builtins.list[DomainEvent]:
        """At most ``limit`` events not yet delivered, oldest first (id ascending)."""

    async def mark_delivered(self, event_id: str, at: datetime) -> bool:
        """True if the event was pending (it is not any more)."""

    async def purge(self, before: datetime, limit: int) -> int:
        """Delete at most ``limit`` events that are past keeping; returns how many.

        Past keeping: delivered before ``before``; and, since nothing delivers the outbox
        yet (delivery comes with outgoing webhooks), also never delivered and occurred
        before ``before``. Once delivery exists, undelivered events must stop being purged
        here (they would be retried or dead-lettered instead). ``limit`` bounds the work
        of one call, so that one transaction never holds the store for long: call again
        until it returns less than ``limit``."""


class ProviderEvents(Protocol):
    """The provider events already applied: what makes each apply at most once."""

    async def record(self, provider: str, event_id: str, at: datetime) -> bool:
        """True if this event of this provider is new (and is now recorded), False if it
        was recorded before. Recorded in the caller's transaction: if that rolls back,
        the event counts as never seen."""


class OAuthClientRepository(Protocol):
    """The registered OAuth clients (core/domain/oauth.py). Ids are unique by making."""

    async def add(self, client: OAuthClient) -> None:
        """Insert a new client."""

    async def get(self, client_id: str) -> OAuthClient | None:
        """The client, or None. In a write unit of work its row is the unit's own until the
        unit ends (see UnitOfWorkFactory): a use case that reads, changes and saves a client
        never loses a concurrent change of it, so no separate "for update" read is needed."""

    async def update(self, client: OAuthClient) -> None:
        """Persist name, redirect_uris, grant_types, scopes, status, secret_digest,
        secret_rotated_at and updated_at (id, type, created_at and created_by never change)."""

    async def list(self, page: PageRequest, filter: OAuthClientFilter) -> Page[OAuthClient]:
        """Ordered by id ascending (creation order)."""

"""In-memory fakes of the core's ports, for unit tests. The contract suite in
tests/contract runs the same tests against these and the real adapters, which is
what keeps the fakes honest."""

from __future__ import annotations

import asyncio
import collections
import copy
import hashlib
import hmac
import itertools
import math
import secrets
import string
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import attrs
import orjson

from core.domain.api_keys import ApiKey
from core.domain.audit import AuditEntry
from core.domain.catalog import Product
from core.domain.errors import (
    ConcurrentUpdate,
    Conflict,
    EmailTaken,
    Invalid,
    InvalidCursor,
    PaymentProviderUnavailable,
    ProviderReferenceTaken,
    SkuTaken,
    Throttled,
    TokenInvalid,
)
from core.domain.events import DomainEvent
from core.domain.grants import AuthorizationCode, Consent
from core.domain.money import Money
from core.domain.oauth import OAuthClient
from core.domain.orders import Order, OrderStatus
from core.domain.pagination import Page, PageRequest
from core.domain.payments import Payment, Refund, RefundStatus
from core.domain.users import RefreshToken, Role, User
from core.ports.clock import Clock
from core.ports.idempotency import IdempotencyClaim, StoredRequest, record_current_claim
from core.ports.identity import AccessClaims, AccessToken, ThrottleBudget, ThrottleTicket
from core.ports.payments import (
    ProviderEvent,
    ProviderEventKind,
    ProviderPayment,
    ProviderPaymentStatus,
    ProviderRefund,
)
from core.ports.repositories import (
    ApiKeyFilter,
    AuditFilter,
    EndedSession,
    OAuthClientFilter,
    OrderFilter,
    OrderSummary,
    ProductFilter,
    ProductSort,
    ProductVersion,
    SessionChanges,
    UserFilter,
)
from core.ports.unit_of_work import count_commit


def _page(
    items: Iterable[Any],
    page: PageRequest,
    bound_to: list[Any],
    key: Callable[[Any], tuple[str | int, ...]],
    types: tuple[type, ...] = (str,),
    *,
    descending: bool = False,
) -> Page[Any]:
    """A keyset page of ``items`` in the order of ``key`` (ending in the id, so it is total).
    The fake's cursors are its own: JSON text of what the list is bound to (its name, sort
    and filters) and the key of the last item; the SQLite adapter's have another form, and
    no caller may tell."""
    ordered = sorted(items, key=key, reverse=descending)
    if page.after is not None:
        after = _after(page.after, bound_to, types)
        ordered = [item for item in ordered if (key(item) < after if descending else key(item) > after)]
    chosen = [copy.deepcopy(item) for item in ordered[: page.limit + 1]]  # callers may change their copies
    if len(chosen) > page.limit:
        last = key(chosen[page.limit - 1])
        return Page(items=chosen[: page.limit], next_after=orjson.dumps({"list": bound_to, "after": last}).decode())
    return Page(items=chosen, next_after=None)


def _after(cursor: str, bound_to: list[Any], types: tuple[type, ...]) -> tuple[Any, ...]:
    try:
        value = orjson.loads(cursor)
    except orjson.JSONDecodeError:
        raise InvalidCursor() from None
    if not isinstance(value, dict) or set(value) != {"list", "after"} or value["list"] != bound_to:
        raise InvalidCursor()
    after = value["after"]
    if not isinstance(after, list) or tuple(type(part) for part in after) != types:
        raise InvalidCursor()
    return tuple(after)


_ASCII_FOLD = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def _timestamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # sorts as the time does


def _product_key(sort: ProductSort) -> Callable[[Product], tuple[str | int, ...]]:
    """What ProductSort promises: ties by id; names by code point with A-Z lowered."""
    column = sort.value.lstrip("-")
    if column == "price":
        return lambda p: (p.price.amount, p.id)
    if column == "name":
        return lambda p: (p.name.translate(_ASCII_FOLD), p.id)
    if column == "created_at":
        return lambda p: (_timestamp(p.created_at), p.id)
    return lambda p: (p.id,)


@attrs.define
class InMemoryStore:
    users: dict[str, User] = attrs.Factory(dict)
    products: dict[str, Product] = attrs.Factory(dict)
    refresh_tokens: dict[str, RefreshToken] = attrs.Factory(dict)
    audit: dict[str, AuditEntry] = attrs.Factory(dict)
    orders: dict[str, Order] = attrs.Factory(dict)
    payments: dict[str, Payment] = attrs.Factory(dict)
    refunds: dict[str, Refund] = attrs.Factory(dict)
    outbox: dict[str, DomainEvent] = attrs.Factory(dict)
    delivered: dict[str, datetime] = attrs.Factory(dict)  # outbox event id -> when
    provider_events: dict[tuple[str, str], datetime] = attrs.Factory(dict)
    idempotency: dict[tuple[str, str], StoredRequest] = attrs.Factory(dict)
    revoked_sessions: list[tuple[int, str, datetime]] = attrs.Factory(list)  # (seq, session id, until)
    revoked_seq: int = 0
    oauth_clients: dict[str, OAuthClient] = attrs.Factory(dict)
    authorization_codes: dict[str, AuthorizationCode] = attrs.Factory(dict)
    consents: dict[tuple[str, str], Consent] = attrs.Factory(dict)  # (user id, client id) -> consent
    api_keys: dict[str, ApiKey] = attrs.Factory(dict)


class InMemoryUserRepository:
    def __init__(self, store: InMemoryStore):
        self._s = store

    async def add(self, user: User) -> None:
        if any(u.email == user.email or u.email_skeleton == user.email_skeleton for u in self._s.users.values()):
            raise EmailTaken()
        self._s.users[user.id] = copy.deepcopy(user)

    async def get(self, user_id: str) -> User | None:
        return copy.deepcopy(self._s.users.get(user_id))

    async def get_by_email(self, email: str) -> User | None:
        return copy.deepcopy(next((u for u in self._s.users.values() if u.email == email), None))

    async def update(self, user: User) -> None:
        self._s.users[user.id] = copy.deepcopy(user)

    async def list(self, page: PageRequest, filter: UserFilter) -> Page[User]:
        users = (
            u
            for u in self._s.users.values()
            if (filter.role is None or u.role is filter.role)
            and (filter.status is None or u.status is filter.status)
            and (filter.email is None or u.email == filter.email)
        )
        role, status = (None if f is None else f.value for f in (filter.role, filter.status))
        return _page(users, page, ["users", role, status, filter.email], lambda u: (u.id,))

    async def count(self, filter: UserFilter) -> int:
        # Units of work are serialized (one write lock), so a count holds until commit.
        return sum(
            1
            for u in self._s.users.values()
            if (filter.role is None or u.role is filter.role)
            and (filter.status is None or u.status is filter.status)
            and (filter.email is None or u.email == filter.email)
        )


def _words(text: str) -> list[str]:
    # Case and accents do not matter, as in SQLite's full-text index (unicode61 remove_diacritics).
    folded = "".join(c for c in unicodedata.normalize("NFD", text.lower()) if not unicodedata.combining(c))
    return [w for w in "".join(c if c.isalnum() else " " for c in folded).split() if w]


class InMemoryProductRepository:
    def __init__(self, store: InMemoryStore):
        self._s = store

    async def add(self, product: Product) -> None:
        if any(p.sku == product.sku for p in self._s.products.values()):
            raise SkuTaken(product.sku)
        self._s.products[product.id] = copy.deepcopy(product)

    async def add_many(self, products: Sequence[Product]) -> None:
        for product in products:
            await self.add(product)

    async def get(self, product_id: str) -> Product | None:
        return copy.deepcopy(self._s.products.get(product_id))

    async def get_by_sku(self, sku: str) -> Product | None:
        return copy.deepcopy(next((p for p in self._s.products.values() if p.sku == sku), None))

    async def update(self, product: Product) -> None:
        stored = self._s.products.get(product.id)
        if stored is None or stored.version != product.version:
            raise ConcurrentUpdate("The product")
        if any(p.sku == product.sku and p.id != product.id for p in self._s.products.values()):
            raise SkuTaken(product.sku)
        product.version += 1
        self._s.products[product.id] = copy.deepcopy(product)

    async def delete(self, product_id: str) -> bool:
        return self._s.products.pop(product_id, None) is not None

    def _matches(self, p: Product, f: ProductFilter) -> bool:
        if f.active is not None and p.active is not f.active:
            return False
        if f.price_min is not None and p.price.amount < f.price_min:
            return False
        if f.price_max is not None and p.price.amount > f.price_max:
            return False
        if f.text is not None:
            wanted = _words(f.text)
            have = _words(f"{p.name} {p.sku} {p.description}")
            # every word of the query is a word, or the prefix of a word, of the product
            if not wanted or not all(any(h.startswith(w) for h in have) for w in wanted):
                return False
        return True

    async def list(self, page: PageRequest, filter: ProductFilter, sort: ProductSort = ProductSort.ID) -> Page[Product]:
        products = (p for p in self._s.products.values() if self._matches(p, filter))
        bound_to = ["products", sort.value, filter.active, filter.price_min, filter.price_max, filter.text]
        types = {"id": (str,), "price": (int, str)}.get(sort.value.lstrip("-"), (str, str))
        return _page(products, page, bound_to, _product_key(sort), types, descending=sort.value.startswith("-"))

    async def list_versions(
        self, page: PageRequest, filter: ProductFilter, sort: ProductSort = ProductSort.ID
    ) -> Page[ProductVersion]:
        products = await self.list(page, filter, sort)
        return Page(items=[ProductVersion(p.id, p.version) for p in products.items], next_after=products.next_after)

    async def get_many(self, product_ids: Sequence[str]) -> list[Product]:
        return [copy.deepcopy(self._s.products[i]) for i in dict.fromkeys(product_ids) if i in self._s.products]

    async def get_many_by_sku(self, skus: Sequence[str]) -> list[Product]:
        wanted = set(skus)
        return [copy.deepcopy(p) for p in self._s.products.values() if p.sku in wanted]

    async def low_stock(self, threshold: int, limit: int) -> list[Product]:
        low = sorted(
            (p for p in self._s.products.values() if p.active and p.stock <= threshold), key=lambda p: (p.stock, p.id)
        )
        return [copy.deepcopy(p) for p in low[:limit]]


class InMemoryRefreshTokenRepository:
    def __init__(self, store: InMemoryStore):
        self._s = store

    async def add(self, token: RefreshToken) -> None:
        self._s.refresh_tokens[token.id] = copy.deepcopy(token)

    async def get_by_digest(self, digest: str) -> RefreshToken | None:
        return copy.deepcopy(next((t for t in self._s.refresh_tokens.values() if t.token_digest == digest), None))

    async def mark_used(self, token_id: str, at: datetime) -> bool:
        t = self._s.refresh_tokens.get(token_id)
        if t is None or t.used_at is not None or t.revoked_at is not None:
            return False
        t.used_at = at
        return True

    async def revoke_family(self, family_id: str, at: datetime) -> int:
        return self._revoke(lambda t: t.family_id == family_id, at)

    async def revoke_all_for_user(self, user_id: str, at: datetime) -> int:
        return self._revoke(lambda t: t.user_id == user_id, at)

    async def families_since(self, user_id: str, since: datetime) -> list[str]:
        return sorted(
            {t.family_id for t in self._s.refresh_tokens.values() if t.user_id == user_id and t.created_at >= since}
        )

    async def client_families_since(self, client_id: str, user_id: str | None, since: datetime) -> list[str]:
        return sorted(
            {
                t.family_id
                for t in self._s.refresh_tokens.values()
                if t.client_id == client_id and user_id in (None, t.user_id) and t.created_at >= since
            }
        )

    async def revoke_client(self, client_id: str, user_id: str | None, at: datetime) -> int:
        return self._revoke(lambda t: t.client_id == client_id and user_id in (None, t.user_id), at)

    def _revoke(self, which: Any, at: datetime) -> int:
        n = 0
        for t in self._s.refresh_tokens.values():
            if which(t) and t.revoked_at is None:
                t.revoked_at = at
                n += 1
        return n


class InMemoryRevokedSessions:
    def __init__(self, store: InMemoryStore):
        self._s = store

    async def add(self, session_ids: Sequence[str], at: datetime, until: datetime) -> None:
        known = {session_id for _, session_id, _ in self._s.revoked_sessions}
        for session_id in session_ids:
            if session_id not in known:
                known.add(session_id)
                self._s.revoked_seq += 1
                self._s.revoked_sessions.append((self._s.revoked_seq, session_id, until))

    async def changes(self, cursor: str | None, now: datetime, limit: int) -> SessionChanges:
        # The fake's cursor is the last seq scanned; a first call scans every record.
        after = 0 if cursor is None else int(cursor)
        scanned = [record for record in self._s.revoked_sessions if record[0] > after][:limit]
        ended = [EndedSession(s, u) for _, s, u in scanned if u > now]
        last = scanned[-1][0] if scanned else after
        return SessionChanges(ended, str(last), complete=len(scanned) < limit)

    async def purge(self, before: datetime, limit: int) -> int:
        by_until = sorted(self._s.revoked_sessions, key=lambda r: (r[2], r[0]))
        gone = {seq for seq, _, until in by_until if until < before}
        gone = {seq for seq, _, _ in [r for r in by_until if r[0] in gone][:limit]}
        self._s.revoked_sessions = [record for record in self._s.revoked_sessions if record[0] not in gone]
        return len(gone)


class InMemoryApiKeyRepository:
    def __init__(self, store: InMemoryStore):
        self._s = store

    async def add(self, key: ApiKey) -> None:
        self._s.api_keys[key.id] = copy.deepcopy(key)

    async def get(self, key_id: str) -> ApiKey | None:
        return copy.deepcopy(self._s.api_keys.get(key_id))

    async def get_by_digest(self, digest: str) -> ApiKey | None:
        return copy.deepcopy(next((k for k in self._s.api_keys.values() if k.secret_digest == digest), None))

    async def list(self, page: PageRequest, filter: ApiKeyFilter) -> Page[ApiKey]:
        keys = (k for k in self._s.api_keys.values() if filter.user_id is None or k.user_id == filter.user_id)
        return _page(keys, page, ["api_keys", filter.user_id], lambda k: (k.id,), descending=True)

    async def update(self, key: ApiKey) -> None:
        stored = self._s.api_keys.get(key.id)
        if stored is not None:
            stored.revoked_at = key.revoked_at
            stored.last_used_at = key.last_used_at

    async def record_use(self, key_id: str, at: datetime, *, unless_since: datetime) -> bool:
        stored = self._s.api_keys.get(key_id)
        if stored is None or (stored.last_used_at is not None and stored.last_used_at > unless_since):
            return False
        stored.last_used_at = at
        return True


class InMemoryAuditLog:
    def __init__(self, store: InMemoryStore):
        self._s = store

    async def append(self, entry: AuditEntry) -> None:
        self._s.audit[entry.id] = entry

    async def list(self, page: PageRequest, filter: AuditFilter) -> Page[AuditEntry]:
        entries = (
            e
            for e in self._s.audit.values()
            if (filter.actor_id is None or e.actor_id == filter.actor_id)
            and (filter.action is None or e.action == filter.action)
            and (filter.object_type is None or e.object_type == filter.object_type)
            and (filter.object_id is None or e.object_id == filter.object_id)
        )
        bound_to = ["audit", filter.actor_id, filter.action, filter.object_type, filter.object_id]
        return _page(entries, page, bound_to, lambda e: (e.id,), descending=True)


def _check_version(stored: Any, new: Any, what: str) -> None:
    """The stored object must still be at the version the caller read (see OrderRepository.update)."""
    if stored is None or stored.version != new.version:
        raise ConcurrentUpdate(what)


class InMemoryOrderRepository:
    def __init__(self, store: InMemoryStore):
        self._s = store

    async def add(self, order: Order) -> None:
        self._s.orders[order.id] = copy.deepcopy(order)

    async def add_many(self, orders: Sequence[Order]) -> None:
        for order in orders:
            await self.add(order)

    async def get(self, order_id: str) -> Order | None:
        return copy.deepcopy(self._s.orders.get(order_id))

    async def get_many(self, order_ids: Sequence[str]) -> list[Order]:
        return [copy.deepcopy(self._s.orders[i]) for i in dict.fromkeys(order_ids) if i in self._s.orders]

    async def update(self, order: Order) -> None:
        stored = self._s.orders.get(order.id)
        _check_version(stored, order, "The order")
        assert stored is not None
        # Only what the port persists: lines never change.
        stored.status = order.status
        stored.amount_paid = order.amount_paid
        stored.amount_refunded = order.amount_refunded
        stored.updated_at = order.updated_at
        stored.expires_at = order.expires_at
        stored.version = order.version = order.version + 1

    async def list(self, page: PageRequest, filter: OrderFilter) -> Page[Order]:
        orders = (
            o
            for o in self._s.orders.values()
            if (filter.customer_id is None or o.customer_id == filter.customer_id)
            and (filter.status is None or o.status is filter.status)
        )
        bound_to = ["orders", filter.customer_id, None if filter.status is None else filter.status.value]
        return _page(orders, page, bound_to, lambda o: (o.id,), descending=True)

    async def due_for_expiry(self, now: datetime, limit: int) -> list[str]:
        due = sorted(
            (
                o
                for o in self._s.orders.values()
                if o.status is OrderStatus.PENDING_PAYMENT and o.expires_at is not None
            ),
            key=lambda o: (o.expires_at, o.id),
        )
        return [o.id for o in due if o.expires_at is not None and o.expires_at <= now][:limit]

    async def summary_since(self, since: datetime, currency: str) -> OrderSummary:
        standing = [
            o
            for o in self._s.orders.values()
            if o.created_at >= since
            and o.currency == currency
            and o.status not in (OrderStatus.CANCELLED, OrderStatus.EXPIRED)
        ]
        return OrderSummary(orders=len(standing), total=sum(o.total.amount for o in standing))

    async def count_with_status(self, status: OrderStatus) -> int:
        return sum(1 for o in self._s.orders.values() if o.status is status)


class InMemoryPaymentRepository:
    def __init__(self, store: InMemoryStore):
        self._s = store

    def _check_reference(self, payment: Payment) -> None:
        ref = payment.provider_reference
        if ref is not None and any(
            p.provider_reference == ref and p.id != payment.id for p in self._s.payments.values()
        ):
            raise ProviderReferenceTaken(ref)

    async def add(self, payment: Payment) -> None:
        self._check_reference(payment)
        self._s.payments[payment.id] = copy.deepcopy(payment)

    async def add_many(self, payments: Sequence[Payment]) -> None:
        for payment in payments:
            await self.add(payment)

    async def get(self, payment_id: str) -> Payment | None:
        return copy.deepcopy(self._s.payments.get(payment_id))

    async def get_by_provider_reference(self, reference: str) -> Payment | None:
        return copy.deepcopy(next((p for p in self._s.payments.values() if p.provider_reference == reference), None))

    async def list_for_order(self, order_id: str) -> list[Payment]:
        return sorted(
            (copy.deepcopy(p) for p in self._s.payments.values() if p.order_id == order_id), key=lambda p: p.id
        )

    async def update(self, payment: Payment) -> None:
        stored = self._s.payments.get(payment.id)
        _check_version(stored, payment, "The payment")
        assert stored is not None
        self._check_reference(payment)
        stored.status = payment.status
        stored.provider_reference = payment.provider_reference
        stored.client_secret = payment.client_secret
        stored.next_action = copy.deepcopy(payment.next_action)
        stored.failure_code = payment.failure_code
        stored.updated_at = payment.updated_at
        stored.version = payment.version = payment.version + 1


class InMemoryRefundRepository:
    def __init__(self, store: InMemoryStore):
        self._s = store

    async def add(self, refund: Refund) -> None:
        self._s.refunds[refund.id] = copy.deepcopy(refund)

    async def add_many(self, refunds: Sequence[Refund]) -> None:
        for refund in refunds:
            await self.add(refund)

    async def get(self, refund_id: str) -> Refund | None:
        return copy.deepcopy(self._s.refunds.get(refund_id))

    async def list_for_order(self, order_id: str) -> list[Refund]:
        return sorted(
            (copy.deepcopy(r) for r in self._s.refunds.values() if r.order_id == order_id), key=lambda r: r.id
        )

    async def list_for_payment(self, payment_id: str) -> list[Refund]:
        return sorted(
            (copy.deepcopy(r) for r in self._s.refunds.values() if r.payment_id == payment_id), key=lambda r: r.id
        )

    async def list_unsent(self, created_after: datetime, created_before: datetime, limit: int) -> list[Refund]:
        unsent = (
            r
            for r in self._s.refunds.values()
            if r.status is RefundStatus.PENDING
            and r.provider_reference is None
            and created_after < r.created_at < created_before
        )
        return [copy.deepcopy(r) for r in sorted(unsent, key=lambda r: r.id)[:limit]]

    async def count_pending(self) -> int:
        return sum(1 for r in self._s.refunds.values() if r.status is RefundStatus.PENDING)

    async def update(self, refund: Refund) -> None:
        stored = self._s.refunds.get(refund.id)
        _check_version(stored, refund, "The refund")
        assert stored is not None
        stored.status = refund.status
        stored.provider_reference = refund.provider_reference
        stored.failure_code = refund.failure_code
        stored.updated_at = refund.updated_at
        stored.version = refund.version = refund.version + 1


class InMemoryOutbox:
    def __init__(self, store: InMemoryStore):
        self._s = store

    async def append(self, event: DomainEvent) -> None:
        self._s.outbox[event.id] = copy.deepcopy(event)

    async def list_pending(self, limit: int) -> list[DomainEvent]:
        pending = sorted((e for e in self._s.outbox.values() if e.id not in self._s.delivered), key=lambda e: e.id)
        return copy.deepcopy(pending[:limit])

    async def mark_delivered(self, event_id: str, at: datetime) -> bool:
        if event_id not in self._s.outbox or event_id in self._s.delivered:
            return False
        self._s.delivered[event_id] = at
        return True

    async def purge(self, before: datetime, limit: int) -> int:
        old = [
            event_id
            for event_id, event in sorted(self._s.outbox.items())
            if (self._s.delivered[event_id] < before if event_id in self._s.delivered else event.occurred_at < before)
        ][:limit]
        for event_id in old:
            del self._s.outbox[event_id]
            self._s.delivered.pop(event_id, None)
        return len(old)


class InMemoryProviderEvents:
    def __init__(self, store: InMemoryStore):
        self._s = store

    async def record(self, provider: str, event_id: str, at: datetime) -> bool:
        if (provider, event_id) in self._s.provider_events:
            return False
        self._s.provider_events[provider, event_id] = at
        return True


class InMemoryIdempotencyRepository:
    def __init__(self, store: InMemoryStore):
        self._s = store

    async def get(self, scope: str, key: str) -> StoredRequest | None:
        return self._s.idempotency.get((scope, key))

    async def claim(self, claim: IdempotencyClaim, at: datetime, expired_before: datetime) -> bool:
        held = self._s.idempotency.get((claim.scope, claim.key))
        if held is not None and held.created_at >= expired_before:
            return False
        self._s.idempotency[claim.scope, claim.key] = StoredRequest(
            scope=claim.scope, key=claim.key, fingerprint=claim.fingerprint, created_at=at
        )
        return True

    async def complete(self, scope: str, key: str, status: int, headers: dict[str, str], body: bytes) -> None:
        held = self._s.idempotency.get((scope, key))
        if held is not None:
            self._s.idempotency[scope, key] = attrs.evolve(held, status=status, headers=dict(headers), body=body)

    async def release(self, scope: str, key: str) -> None:
        self._s.idempotency.pop((scope, key), None)

    async def purge(self, before: datetime, limit: int) -> int:
        old = sorted(
            (k for k, v in self._s.idempotency.items() if v.created_at < before),
            key=lambda k: self._s.idempotency[k].created_at,
        )[:limit]
        for k in old:
            del self._s.idempotency[k]
        return len(old)


class InMemoryOAuthClientRepository:
    def __init__(self, store: InMemoryStore):
        self._s = store

    async def add(self, client: OAuthClient) -> None:
        self._s.oauth_clients[client.id] = copy.deepcopy(client)

    async def get(self, client_id: str) -> OAuthClient | None:
        return copy.deepcopy(self._s.oauth_clients.get(client_id))

    async def update(self, client: OAuthClient) -> None:
        stored = self._s.oauth_clients[client.id]
        # What the port persists; the fields that never change stay as they were stored.
        self._s.oauth_clients[client.id] = attrs.evolve(
            copy.deepcopy(client),
            type=stored.type,
            created_at=stored.created_at,
            created_by=stored.created_by,
        )

    async def list(self, page: PageRequest, filter: OAuthClientFilter) -> Page[OAuthClient]:
        clients = (c for c in self._s.oauth_clients.values() if filter.status in (None, c.status))
        status = None if filter.status is None else filter.status.value
        return _page(clients, page, ["oauth_clients", status], lambda c: (c.id,))


class InMemoryAuthorizationCodeRepository:
    def __init__(self, store: InMemoryStore):
        self._s = store

    async def add(self, code: AuthorizationCode) -> None:
        self._s.authorization_codes[code.id] = copy.deepcopy(code)

    async def get_by_digest(self, digest: str) -> AuthorizationCode | None:
        return copy.deepcopy(next((c for c in self._s.authorization_codes.values() if c.code_digest == digest), None))

    async def mark_used(self, code_id: str, at: datetime, family_id: str) -> bool:
        code = self._s.authorization_codes.get(code_id)
        if code is None or code.used_at is not None:
            return False
        code.used_at, code.family_id = at, family_id
        return True

    async def purge(self, before: datetime, limit: int) -> int:
        expired = sorted(
            (c for c in self._s.authorization_codes.values() if c.expires_at < before), key=lambda c: c.expires_at
        )
        for code in expired[:limit]:
            del self._s.authorization_codes[code.id]
        return len(expired[:limit])


class InMemoryConsentRepository:
    def __init__(self, store: InMemoryStore):
        self._s = store

    async def get(self, user_id: str, client_id: str) -> Consent | None:
        return copy.deepcopy(self._s.consents.get((user_id, client_id)))

    async def put(self, consent: Consent) -> None:
        self._s.consents[(consent.user_id, consent.client_id)] = copy.deepcopy(consent)

    async def delete(self, user_id: str, client_id: str) -> bool:
        return self._s.consents.pop((user_id, client_id), None) is not None

    async def list_for_user(self, user_id: str) -> list[Consent]:
        mine = (c for (owner, _), c in self._s.consents.items() if owner == user_id)
        return [copy.deepcopy(c) for c in sorted(mine, key=lambda c: c.client_id)]


class InMemoryUnitOfWork:
    """Works on a private copy of the store; commit swaps it in. Writers are serialized,
    like the SQLite adapter's, so a use case sees no one else's half-done work."""

    def __init__(self, db: InMemoryDatabase, readonly: bool):
        self._db = db
        self._readonly = readonly
        self.committed = False

    async def __aenter__(self) -> InMemoryUnitOfWork:
        if not self._readonly:
            await self._db.write_lock.acquire()
        self._work = copy.deepcopy(self._db.store)
        # A write in a read-only unit is refused by the real stores: here it is found at the
        # unit's end (a use case that writes in one must fail its unit tests too).
        self._as_read = repr(self._work) if self._readonly else ""
        self.users = InMemoryUserRepository(self._work)
        self.products = InMemoryProductRepository(self._work)
        self.refresh_tokens = InMemoryRefreshTokenRepository(self._work)
        self.revoked_sessions = InMemoryRevokedSessions(self._work)
        self.api_keys = InMemoryApiKeyRepository(self._work)
        self.audit = InMemoryAuditLog(self._work)
        self.orders = InMemoryOrderRepository(self._work)
        self.payments = InMemoryPaymentRepository(self._work)
        self.refunds = InMemoryRefundRepository(self._work)
        self.outbox = InMemoryOutbox(self._work)
        self.provider_events = InMemoryProviderEvents(self._work)
        self.idempotency = InMemoryIdempotencyRepository(self._work)
        self.oauth_clients = InMemoryOAuthClientRepository(self._work)
        self.authorization_codes = InMemoryAuthorizationCodeRepository(self._work)
        self.consents = InMemoryConsentRepository(self._work)
        return self

    async def commit(self) -> None:
        if self._readonly:
            raise RuntimeError("commit() in a read-only unit of work")
        await record_current_claim(self.idempotency, self._db.clock.now())  # raises: nothing is published
        # Publish a copy: the repositories keep working on self._work, so writes made
        # after this commit stay private until the next commit (or are dropped at exit).
        self._db.store = copy.deepcopy(self._work)
        self._db.commits += 1
        self.committed = True
        count_commit()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._readonly:
            self._db.write_lock.release()
        elif exc_type is None and repr(self._work) != self._as_read:
            raise RuntimeError("a read-only unit of work wrote (the stores refuse that)")


class InMemoryDatabase:
    """The fake's equivalent of a database file: a unit-of-work factory over one store."""

    def __init__(self, clock: Clock) -> None:
        self.store = InMemoryStore()
        self.write_lock = asyncio.Lock()
        self.commits = 0
        self.clock = clock  # stamps idempotency claims, as the SQLite adapter's does
        self.slow_units = 0

    def __call__(self, *, readonly: bool = False, slow: bool = False) -> InMemoryUnitOfWork:
        if slow and not readonly:
            raise ValueError("Only a read-only unit of work may be slow.")
        self.slow_units += slow  # what a test of a service may ask: did it say its read may be slow?
        return InMemoryUnitOfWork(self, readonly)

    def change_counter(self) -> int:
        return self.commits

    @property
    def change_latency(self) -> float:
        return 0.0  # one process: every commit counts at once

    def check_ready(self) -> dict[str, Any]:
        return {"database": "ok"}


class FixedClock:
    def __init__(self, start: datetime | None = None):
        self.current = start or datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, **kwargs: float) -> None:
        self.current += timedelta(**kwargs)


class SequentialIds:
    """Ids that sort in the order they were made, like the real generator's."""

    def __init__(self) -> None:
        self._n = itertools.count(1)

    def new(self, prefix: str) -> str:
        return f"{prefix}_{next(self._n):012d}"


class FakePasswordHasher:
    """Fast and obviously fake; the real argon2 hasher has its own tests."""

    async def hash(self, password: str) -> str:
        return "fake$" + hashlib.sha256(password.encode("utf-8", "surrogatepass")).hexdigest()

    async def verify(self, password_hash: str, password: str) -> bool:
        return password_hash == await self.hash(password)

    def needs_rehash(self, password_hash: str) -> bool:
        return False


class FakeAccessTokens:
    def __init__(self, clock: FixedClock, ttl: int = 900):
        self._clock = clock
        self._ttl = ttl
        self._issued: dict[str, AccessClaims] = {}
        self.rotations = 0

    def issue(
        self,
        user_id: str,
        role: Role,
        session_id: str,
        *,
        client_id: str | None = None,
        scopes: frozenset[str] | None = None,
    ) -> AccessToken:
        token = secrets.token_urlsafe(16)
        now = int(self._clock.now().timestamp())
        self._issued[token] = AccessClaims(
            user_id=user_id,
            role=role,
            session_id=session_id,
            expires_at=now + self._ttl,
            client_id=client_id,
            scopes=scopes if client_id is not None else None,
            issued_at=now,
        )
        return AccessToken(token=token, expires_in=self._ttl)

    def issue_for_client(self, client_id: str, role: Role, scopes: frozenset[str], session_id: str) -> AccessToken:
        return self.issue(client_id, role, session_id, client_id=client_id, scopes=scopes)

    async def rotate_signing_key(self) -> str:
        self.rotations += 1
        return f"kid-{self.rotations}"

    def verify(self, token: str) -> AccessClaims:
        claims = self._issued.get(token)
        if claims is None or claims.expires_at <= self._clock.now().timestamp():
            raise TokenInvalid()
        return claims


class FakeOpaqueTokens:
    def generate(self) -> str:
        return secrets.token_urlsafe(32)

    def digest(self, token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()


class InMemoryThrottle:
    def __init__(self, clock: FixedClock):
        self._clock = clock
        self._uses: dict[str, list[tuple[float, str]]] = {}  # key -> (time, ticket id), oldest first
        self._tickets = itertools.count(1)

    async def take(self, budgets: Sequence[ThrottleBudget]) -> ThrottleTicket:
        now = self._clock.now().timestamp()
        waits = [0]
        for budget in budgets:
            recent = [use for use in self._uses.get(budget.key, []) if use[0] > now - budget.window_seconds]
            self._uses[budget.key] = recent
            if len(recent) >= budget.limit:
                waits.append(max(1, math.ceil(recent[-budget.limit][0] + budget.window_seconds - now)))
        if max(waits) > 0:
            raise Throttled(retry_after=max(waits))
        ticket = ThrottleTicket(keys=tuple(b.key for b in budgets), id=f"t{next(self._tickets)}")
        for budget in budgets:
            self._uses[budget.key].append((now, ticket.id))
        return ticket

    async def give_back(self, ticket: ThrottleTicket, *, reset: Sequence[str] = ()) -> None:
        for key in ticket.keys:
            self._uses[key] = [use for use in self._uses.get(key, []) if use[1] != ticket.id]
        for key in reset:
            self._uses.pop(key, None)

    def uses(self, key: str) -> int:
        return len(self._uses.get(key, []))


class FakeKeyedDigest:
    def __init__(self, key: bytes = b"fake-key") -> None:
        self._key = key

    def digest(self, data: bytes) -> str:
        return hmac.new(self._key, data, "sha256").hexdigest()


@attrs.define
class FakeIntent:
    """A card payment as the fake provider holds it."""

    reference: str
    amount: Money
    payment_method: str
    status: ProviderPaymentStatus
    metadata: dict[str, str]
    client_secret: str | None = None
    next_action: dict[str, Any] | None = None
    failure_code: str | None = None
    refunded: int = 0

    def answer(self) -> ProviderPayment:
        return ProviderPayment(
            reference=self.reference,
            status=self.status,
            amount=self.amount,
            client_secret=self.client_secret,
            next_action=copy.deepcopy(self.next_action),
            failure_code=self.failure_code,
        )


class FakePaymentGateway:
    """A payment provider that keeps the promises of core/ports/payments.py, and the ones
    Stripe keeps that an emulator does not model:

    - idempotency: a repeated idempotency key gets the first answer again and never a
      second charge or refund; the same key with other parameters is refused;
    - refund limits: never more than a payment captured (Conflict), nothing of a payment
      that did not succeed;
    - outcomes by payment method: ``pm_card_visa`` succeeds, ``pm_card_chargeDeclined`` is
      declined (``generic_decline``), ``pm_card_threeDSecure2Required`` requires action
      (``complete_action`` finishes it), ``pm_card_processing`` stays processing; others
      can be added to ``outcomes``; an unknown one is Invalid;
    - signed notifications: every change it makes is also sent as a webhook, kept in
      ``sent`` (payload, signature header) for a test to deliver in any order, any number
      of times, to ``parse_event``, which verifies a signature of its own scheme:
      ``t=<unix>,v1=<hex HMAC-SHA256 of "t.body">`` with a 300 s tolerance.

    Failures on demand: ``down`` (every call raises Unavailable before reaching the
    provider), ``lose_answers`` (the provider does the work, then the answer is lost:
    Unavailable), ``refund_failure`` (refunds come back failed with this code), and
    ``hold()`` (answers wait at a gate until released, so a test can deliver a webhook
    while the caller is still waiting for the answer). ``calls`` counts calls by name.
    """

    SECRET = b"whsec_fake_tillbox"
    TOLERANCE = 300

    def __init__(self, clock: FixedClock, *, configured: bool = True) -> None:
        self._clock = clock
        self.configured = configured
        self.down = False
        self.lose_answers = False
        self.refund_failure: str | None = None
        self.outcomes: dict[str, tuple[ProviderPaymentStatus, str | None]] = {
            "pm_card_visa": (ProviderPaymentStatus.SUCCEEDED, None),
            "pm_card_chargeDeclined": (ProviderPaymentStatus.FAILED, "generic_decline"),
            "pm_card_threeDSecure2Required": (ProviderPaymentStatus.REQUIRES_ACTION, None),
            "pm_card_processing": (ProviderPaymentStatus.PROCESSING, None),
        }
        self.intents: dict[str, FakeIntent] = {}
        self.refunds: dict[str, ProviderRefund] = {}
        self.sent: list[tuple[bytes, str]] = []
        self.calls: collections.Counter[str] = collections.Counter()
        self._answers: dict[str, tuple[tuple[Any, ...], Any]] = {}  # idempotency key -> (request, answer)
        self._payment_numbers = itertools.count(1)
        self._refund_numbers = itertools.count(1)
        self._event_numbers = itertools.count(1)
        self._gate: asyncio.Event | None = None
        self.waiting = asyncio.Event()  # set while an answer waits at the gate

    # Test controls.
    @property
    def charges(self) -> int:
        """Card payments the provider created (each at most once per idempotency key)."""
        return len(self.intents)

    def hold(self) -> None:
        self._gate = asyncio.Event()
        self.waiting.clear()

    def release(self) -> None:
        assert self._gate is not None
        self._gate.set()
        self._gate = None

    def complete_action(self, reference: str, *, succeed: bool = True) -> None:
        """The customer finishes (or fails) the action a payment required."""
        intent = self.intents[reference]
        assert intent.status is ProviderPaymentStatus.REQUIRES_ACTION
        intent.next_action = None
        if succeed:
            intent.status = ProviderPaymentStatus.SUCCEEDED
            self._notify(ProviderEventKind.PAYMENT_SUCCEEDED, intent)
        else:
            intent.status = ProviderPaymentStatus.FAILED
            intent.failure_code = "authentication_required"
            self._notify(ProviderEventKind.PAYMENT_FAILED, intent)

    def refund_outside(self, reference: str, amount: int) -> None:
        """Someone refunds at the provider directly (its dashboard)."""
        intent = self.intents[reference]
        assert intent.refunded + amount <= intent.amount.amount
        intent.refunded += amount
        self._notify(ProviderEventKind.REFUNDED, intent)

    def sign(self, payload: bytes, at: datetime | None = None) -> str:
        t = int((at or self._clock.now()).timestamp())
        digest = hmac.new(self.SECRET, f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
        return f"t={t},v1={digest}"

    def event_payload(self, kind: str, intent: FakeIntent, *, event_id: str | None = None) -> bytes:
        amount = intent.refunded if kind == ProviderEventKind.REFUNDED else intent.amount.amount
        return orjson.dumps(
            {
                "id": event_id or f"evt_fake_{next(self._event_numbers)}",
                "type": kind,
                "payment_reference": intent.reference,
                "amount": amount,
                "currency": intent.amount.currency,
                "failure_code": intent.failure_code,
                "metadata": intent.metadata,
            }
        )

    def _notify(self, kind: ProviderEventKind, intent: FakeIntent) -> None:
        payload = self.event_payload(kind, intent)
        self.sent.append((payload, self.sign(payload)))

    # The port.
    @property
    def available(self) -> bool:
        return self.configured

    def _check_reachable(self) -> None:
        if not self.configured:
            raise PaymentProviderUnavailable("Card payments are not configured.", retry_after=None)
        if self.down:
            raise PaymentProviderUnavailable(retry_after=30)

    async def _answer(self, answer: Any) -> Any:
        if self.lose_answers:
            raise PaymentProviderUnavailable(retry_after=30)
        if self._gate is not None:
            self.waiting.set()
            await self._gate.wait()
        return answer

    def _replay(self, key: str, request: tuple[Any, ...]) -> Any | None:
        seen = self._answers.get(key)
        if seen is None:
            return None
        if seen[0] != request:
            raise Invalid("This idempotency key was used with other parameters.", code="idempotency_key_reused")
        return seen[1]

    async def create_card_payment(
        self, *, amount: Money, payment_method: str, idempotency_key: str, metadata: dict[str, str]
    ) -> ProviderPayment:
        self.calls["create_card_payment"] += 1
        self._check_reachable()
        request = ("create", amount, payment_method, tuple(sorted(metadata.items())))
        replayed = self._replay(idempotency_key, request)
        if replayed is not None:
            return await self._answer(replayed)
        if payment_method not in self.outcomes:
            raise Invalid(f"No such payment method: {payment_method!r}.", code="payment_method_invalid")
        status, failure_code = self.outcomes[payment_method]
        reference = f"pi_fake_{next(self._payment_numbers)}"
        intent = FakeIntent(reference, amount, payment_method, status, dict(metadata), failure_code=failure_code)
        if status is ProviderPaymentStatus.REQUIRES_ACTION:
            intent.client_secret = f"{reference}_secret_fake"
            intent.next_action = {"type": "use_stripe_sdk"}
        self.intents[reference] = intent
        if status is ProviderPaymentStatus.SUCCEEDED:
            self._notify(ProviderEventKind.PAYMENT_SUCCEEDED, intent)
        elif status is ProviderPaymentStatus.FAILED:
            self._notify(ProviderEventKind.PAYMENT_FAILED, intent)
        answer = intent.answer()
        self._answers[idempotency_key] = (request, answer)
        return await self._answer(answer)

    async def get_payment(self, reference: str) -> ProviderPayment:
        self.calls["get_payment"] += 1
        self._check_reachable()
        intent = self.intents.get(reference)
        if intent is None:
            raise Invalid(f"No such payment: {reference!r}.", code="resource_missing")
        return await self._answer(intent.answer())

    async def refund(self, *, payment_reference: str, amount: Money, idempotency_key: str) -> ProviderRefund:
        self.calls["refund"] += 1
        self._check_reachable()
        request = ("refund", payment_reference, amount)
        replayed = self._replay(idempotency_key, request)
        if replayed is not None:
            return await self._answer(replayed)
        intent = self.intents.get(payment_reference)
        if intent is None:
            raise Invalid(f"No such payment: {payment_reference!r}.", code="resource_missing")
        if intent.status is not ProviderPaymentStatus.SUCCEEDED:
            raise Conflict("This payment captured nothing to refund.", code="charge_not_captured")
        if amount.amount > intent.amount.amount - intent.refunded:
            raise Conflict("The refund is more than what remains of the payment.", code="refund_exceeds_captured")
        reference = f"re_fake_{next(self._refund_numbers)}"
        if self.refund_failure is not None:
            answer = ProviderRefund(reference, payment_reference, amount, False, self.refund_failure)
        else:
            intent.refunded += amount.amount
            answer = ProviderRefund(reference, payment_reference, amount, True)
            self._notify(ProviderEventKind.REFUNDED, intent)
        self.refunds[reference] = answer
        self._answers[idempotency_key] = (request, answer)
        return await self._answer(answer)

    def parse_event(self, payload: bytes, signature_header: str | None) -> ProviderEvent | None:
        parts = dict(p.split("=", 1) for p in (signature_header or "").split(",") if "=" in p)
        try:
            t = int(parts["t"])
            signature = parts["v1"]
        except (KeyError, ValueError):
            raise Invalid("The webhook signature is missing or malformed.", code="invalid_signature") from None
        expected = hmac.new(self.SECRET, f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise Invalid("The webhook signature does not verify.", code="invalid_signature")
        if abs(self._clock.now().timestamp() - t) > self.TOLERANCE:
            raise Invalid("The webhook signature is too old.", code="invalid_signature")
        try:
            body = orjson.loads(payload)
            kind = body["type"]
            if kind not in set(ProviderEventKind):
                return None
            return ProviderEvent(
                id=body["id"],
                kind=ProviderEventKind(kind),
                payment_reference=body["payment_reference"],
                amount=Money(body["amount"], body["currency"]),
                failure_code=body.get("failure_code"),
                metadata=body.get("metadata") or {},
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, Invalid):
            raise Invalid("The webhook payload is not an event.", code="invalid_signature") from None

"""Small readers of the fake store, so that tests assert on exactly what was persisted."""

from __future__ import annotations

from datetime import UTC, datetime

from core.domain.audit import AuditEntry
from core.domain.catalog import Product
from core.domain.events import DomainEvent
from core.domain.orders import Order
from core.domain.payments import Payment, Refund
from core.domain.users import Actor, RefreshToken, Role, User, UserStatus
from tests.fakes import InMemoryDatabase

START = datetime(2026, 1, 1, tzinfo=UTC)  # the FixedClock's time unless a test advances it
STRONG = "violet-harbour-lantern"  # a password that meets the policy
OTHER_STRONG = "quiet-meadow-compass"


def audit(db: InMemoryDatabase) -> list[AuditEntry]:
    """Every committed audit entry, oldest first."""
    return sorted(db.store.audit.values(), key=lambda e: e.id)


def actions(db: InMemoryDatabase) -> list[str]:
    return [e.action for e in audit(db)]


def users(db: InMemoryDatabase) -> list[User]:
    return sorted(db.store.users.values(), key=lambda u: u.id)


def products(db: InMemoryDatabase) -> list[Product]:
    return sorted(db.store.products.values(), key=lambda p: p.id)


def tokens(db: InMemoryDatabase) -> list[RefreshToken]:
    return sorted(db.store.refresh_tokens.values(), key=lambda t: t.id)


def all_orders(db: InMemoryDatabase) -> list[Order]:
    return sorted(db.store.orders.values(), key=lambda o: o.id)


def all_payments(db: InMemoryDatabase) -> list[Payment]:
    return sorted(db.store.payments.values(), key=lambda p: p.id)


def all_refunds(db: InMemoryDatabase) -> list[Refund]:
    return sorted(db.store.refunds.values(), key=lambda r: r.id)


def outbox(db: InMemoryDatabase) -> list[DomainEvent]:
    """Every committed domain event, oldest first."""
    return sorted(db.store.outbox.values(), key=lambda e: e.id)


def event_types(db: InMemoryDatabase) -> list[str]:
    return [e.type for e in outbox(db)]


def stored_actor(db: InMemoryDatabase, user_id: str, role: Role, source_ip: str) -> Actor:
    """An actor whose account exists in the store, as use cases that check the account require."""
    db.store.users[user_id] = User(
        id=user_id,
        email=f"{user_id}@example.com",
        email_skeleton=f"{user_id}@example.com",
        password_hash="fake$unused",
        role=role,
        status=UserStatus.ACTIVE,
        created_at=START,
        updated_at=START,
    )
    return Actor(user_id=user_id, role=role, source_ip=source_ip)

"""Domain objects for the contract tests, built directly with exact, predictable values:
ids from SequentialIds (``prd_000000000001``, ...), times from a FixedClock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from core.domain.api_keys import ApiKey
from core.domain.audit import AuditEntry
from core.domain.catalog import Product
from core.domain.events import DomainEvent
from core.domain.money import Money
from core.domain.oauth import ClientType, GrantType, OAuthClient
from core.domain.orders import Order, OrderLine, OrderStatus
from core.domain.payments import Payment, PaymentMethod, PaymentStatus, Refund, RefundStatus
from core.domain.users import RefreshToken, Role, User, UserStatus
from core.ports.unit_of_work import UnitOfWorkFactory
from tests.fakes import FixedClock, SequentialIds

# Microseconds included: they must survive the round trip.
START = datetime(2026, 1, 1, 9, 30, 15, 123456, tzinfo=UTC)


class Make:
    def __init__(self, ids: SequentialIds, clock: FixedClock):
        self.ids = ids
        self.clock = clock

    def user(self, email: str, *, role: Role = Role.CUSTOMER, status: UserStatus = UserStatus.ACTIVE) -> User:
        now = self.clock.now()
        return User(
            id=self.ids.new("usr"),
            email=email,
            email_skeleton=email,
            password_hash=f"fake${email}",
            role=role,
            status=status,
            created_at=now,
            updated_at=now,
        )

    def product(
        self,
        sku: str,
        *,
        name: str = "Widget",
        description: str = "",
        price: int = 1000,
        stock: int = 5,
        active: bool = True,
    ) -> Product:
        now = self.clock.now()
        return Product(
            id=self.ids.new("prd"),
            sku=sku,
            name=name,
            description=description,
            price=Money(price, "USD"),
            stock=stock,
            active=active,
            created_at=now,
            updated_at=now,
        )

    def api_key(
        self, user: User, digest: str, *, scopes: frozenset[str] = frozenset({"catalog:read"}), name: str = "script"
    ) -> ApiKey:
        now = self.clock.now()
        return ApiKey(
            id=self.ids.new("key"),
            user_id=user.id,
            name=name,
            scopes=scopes,
            secret_digest=digest,
            created_at=now,
            expires_at=now + timedelta(days=90),
        )

    def refresh_token(self, user: User, family_id: str, digest: str) -> RefreshToken:
        now = self.clock.now()
        return RefreshToken(
            id=self.ids.new("rtk"),
            user_id=user.id,
            family_id=family_id,
            token_digest=digest,
            created_at=now,
            expires_at=now + timedelta(days=30),
        )

    def audit_entry(
        self,
        action: str,
        *,
        actor_id: str | None = "usr_000000000099",
        object_type: str = "product",
        object_id: str | None = "prd_000000000099",
        source_ip: str | None = "10.0.0.1",
        details: dict[str, Any] | None = None,
    ) -> AuditEntry:
        return AuditEntry(
            id=self.ids.new("aud"),
            at=self.clock.now(),
            actor_id=actor_id,
            action=action,
            object_type=object_type,
            object_id=object_id,
            source_ip=source_ip,
            details=details or {},
        )

    def order(
        self,
        *lines: tuple[str, int, int],
        customer_id: str = "usr_000000000099",
        status: OrderStatus = OrderStatus.PENDING_PAYMENT,
        amount_paid: int = 0,
        amount_refunded: int = 0,
        expires_in: timedelta | None = timedelta(minutes=30),
    ) -> Order:
        """An order of (sku, unit price, quantity) lines, for products that need not exist."""
        now = self.clock.now()
        items = [
            OrderLine(f"prd_{sku.lower()}", sku, f"Thing {sku}", Money(price, "USD"), quantity)
            for sku, price, quantity in lines or (("MUG-1", 1200, 2),)
        ]
        subtotal = sum((line.line_total for line in items), Money.zero("USD"))
        return Order(
            id=self.ids.new("ord"),
            customer_id=customer_id,
            status=status,
            lines=items,
            subtotal=subtotal,
            total=subtotal,
            amount_paid=amount_paid,
            amount_refunded=amount_refunded,
            currency="USD",
            created_at=now,
            updated_at=now,
            expires_at=None if expires_in is None else now + expires_in,
        )

    def payment(
        self,
        order: Order,
        *,
        amount: int | None = None,
        status: PaymentStatus = PaymentStatus.SUCCEEDED,
        method: PaymentMethod = PaymentMethod.CARD,
        provider_reference: str | None = None,
    ) -> Payment:
        now = self.clock.now()
        card = method is PaymentMethod.CARD
        return Payment(
            id=self.ids.new("pay"),
            order_id=order.id,
            method=method,
            provider="stripe" if card else "manual",
            status=status,
            amount=Money(order.total.amount if amount is None else amount, "USD"),
            created_at=now,
            updated_at=now,
            provider_reference=provider_reference,
            payment_method="pm_card_visa" if card else None,
            reference=None if card else "Till receipt 42",
        )

    def refund(
        self, payment: Payment, amount: int, *, status: RefundStatus = RefundStatus.PENDING, reason: str = "Broken"
    ) -> Refund:
        now = self.clock.now()
        return Refund(
            id=self.ids.new("ref"),
            payment_id=payment.id,
            order_id=payment.order_id,
            amount=Money(amount, "USD"),
            reason=reason,
            status=status,
            created_at=now,
            updated_at=now,
        )

    def event(self, type: str = "order.created", *, aggregate_id: str = "ord_1", payload: Any = None) -> DomainEvent:
        return DomainEvent(
            id=self.ids.new("evt"),
            type=type,
            aggregate_type=type.split(".")[0],
            aggregate_id=aggregate_id,
            occurred_at=self.clock.now(),
            payload={"id": aggregate_id} if payload is None else payload,
        )

    def oauth_client(
        self,
        name: str = "Shop app",
        *,
        type: ClientType = ClientType.CONFIDENTIAL,
        redirect_uris: tuple[str, ...] = ("https://app.example.com/callback",),
        grant_types: tuple[GrantType, ...] = (GrantType.AUTHORIZATION_CODE, GrantType.REFRESH_TOKEN),
        scopes: tuple[str, ...] = ("catalog:read", "orders:read"),
        created_by: str | None = "usr_000000000001",
    ) -> OAuthClient:
        confidential = type is ClientType.CONFIDENTIAL
        return OAuthClient.register(
            id=self.ids.new("cli"),
            name=name,
            type=type,
            redirect_uris=redirect_uris,
            grant_types=grant_types,
            scopes=scopes,
            secret_digest=f"digest-of-{name}" if confidential else None,
            at=self.clock.now(),
            created_by=created_by,
        )


async def store(uow_factory: UnitOfWorkFactory, *objects: object) -> None:
    """Add the objects in one unit of work and commit."""
    async with uow_factory() as uow:
        for obj in objects:
            if isinstance(obj, User):
                await uow.users.add(obj)
            elif isinstance(obj, Product):
                await uow.products.add(obj)
            elif isinstance(obj, RefreshToken):
                await uow.refresh_tokens.add(obj)
            elif isinstance(obj, ApiKey):
                await uow.api_keys.add(obj)
            elif isinstance(obj, AuditEntry):
                await uow.audit.append(obj)
            elif isinstance(obj, Order):
                await uow.orders.add(obj)
            elif isinstance(obj, Payment):
                await uow.payments.add(obj)
            elif isinstance(obj, Refund):
                await uow.refunds.add(obj)
            elif isinstance(obj, DomainEvent):
                await uow.outbox.append(obj)
            elif isinstance(obj, OAuthClient):
                await uow.oauth_clients.add(obj)
            else:
                raise TypeError(obj)
        await uow.commit()

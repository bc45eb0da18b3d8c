"""Domain objects for the contract tests, built directly with exact, predictable values:
ids from SequentialIds (``prd_000000000001``, ...), times from a FixedClock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from core.domain.audit import AuditEntry
from core.domain.catalog import Product
from core.domain.money import Money
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
            elif isinstance(obj, AuditEntry):
                await uow.audit.append(obj)
            else:
                raise TypeError(obj)
        await uow.commit()

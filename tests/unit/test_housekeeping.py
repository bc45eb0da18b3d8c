"""The server's housekeeping: what runs each round, what only every so often, and that one
failing job never keeps the others from running."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.domain.grants import AuthorizationCode
from core.domain.orders import OrderStatus
from core.domain.users import Actor
from core.ports.idempotency import StoredRequest
from core.services.auth import AuthService, LogIn, LogOut, RegisterUser
from core.services.catalog import CatalogService, CreateProduct
from core.services.housekeeping import Housekeeping, HousekeepingSettings
from core.services.idempotency import IdempotencyService
from core.services.oauth import CODE_KEPT_AFTER_EXPIRY, OAuthService
from core.services.orders import OrderItem, OrderService, PlaceOrder
from core.services.outbox import OutboxService, OutboxSettings
from core.services.payments import PaymentService
from tests.fakes import FakeKeyedDigest, FakeOpaqueTokens, FixedClock, InMemoryDatabase, SequentialIds
from tests.unit.helpers import STRONG, all_orders


@pytest.fixture
def chores(
    orders: OrderService, payments: PaymentService, auth: AuthService, db: InMemoryDatabase, clock: FixedClock
) -> Housekeeping:
    idempotency = IdempotencyService(db, clock, FakeKeyedDigest())
    outbox = OutboxService(db, clock, OutboxSettings())
    settings = HousekeepingSettings(purge_every=timedelta(minutes=10))
    oauth = OAuthService(db, auth, FakeOpaqueTokens(), clock, SequentialIds())
    return Housekeeping(orders, payments, idempotency, auth, outbox, oauth, clock, settings)


async def test_a_round_expires_every_order_past_its_deadline(
    chores: Housekeeping,
    orders: OrderService,
    catalog: CatalogService,
    staff: Actor,
    customer: Actor,
    db: InMemoryDatabase,
    clock: FixedClock,
) -> None:
    mug = await catalog.create_product(CreateProduct(actor=staff, sku="MUG-1", name="Mug", price=100, stock=500))
    for _ in range(110):  # more than one batch of the sweep (100)
        await orders.place_order(PlaceOrder(actor=customer, items=[OrderItem(quantity=1, product_id=mug.id)]))
    clock.advance(minutes=31)

    assert await chores.run_round() == []

    assert {o.status for o in all_orders(db)} == {OrderStatus.EXPIRED}
    assert db.store.products[mug.id].stock == 500
    assert (chores.begun, chores.finished, chores.failed) == (1, 1, 0)


async def test_purges_run_every_so_often_not_every_round(
    chores: Housekeeping, auth: AuthService, db: InMemoryDatabase, clock: FixedClock
) -> None:
    await auth.register(RegisterUser("alice@example.com", STRONG))
    pair = await auth.login(LogIn("alice@example.com", STRONG))
    await auth.logout(LogOut(pair.refresh_token))
    db.store.idempotency["user:u", "k"] = StoredRequest(
        scope="user:u", key="k", fingerprint="f", created_at=clock.now()
    )
    clock.advance(days=2)  # the session's record and the key have both outlived their use

    await chores.run_round()  # the first round only schedules the purge
    assert len(db.store.revoked_sessions) == 1 and len(db.store.idempotency) == 1
    clock.advance(minutes=9)
    await chores.run_round()
    assert len(db.store.revoked_sessions) == 1
    clock.advance(minutes=1)
    await chores.run_round()
    assert db.store.revoked_sessions == [] and db.store.idempotency == {}


async def test_authorization_codes_are_purged_a_day_after_they_expire(
    chores: Housekeeping, db: InMemoryDatabase, clock: FixedClock
) -> None:
    def code(name: str, expires_in: timedelta) -> AuthorizationCode:
        now = clock.now()
        return AuthorizationCode(
            id=name,
            code_digest=name,
            client_id="cli_1",
            user_id="usr_1",
            redirect_uri="https://app.example.com/cb",
            scope="orders:read",
            code_challenge="c" * 43,
            created_at=now,
            expires_at=now + expires_in,
        )

    db.store.authorization_codes["old"] = code("old", -CODE_KEPT_AFTER_EXPIRY - timedelta(seconds=1))
    db.store.authorization_codes["recent"] = code("recent", -CODE_KEPT_AFTER_EXPIRY + timedelta(seconds=1))
    await chores.run_round()  # schedules the purges
    clock.advance(minutes=10)
    # Ten minutes on, "recent" has been expired a day and more too: both go.
    db.store.authorization_codes["young"] = code("young", -timedelta(hours=23))
    await chores.run_round()
    assert set(db.store.authorization_codes) == {"young"}


async def test_one_failing_job_does_not_stop_the_others(
    chores: Housekeeping,
    payments: PaymentService,
    orders: OrderService,
    catalog: CatalogService,
    staff: Actor,
    customer: Actor,
    db: InMemoryDatabase,
    clock: FixedClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mug = await catalog.create_product(CreateProduct(actor=staff, sku="MUG-1", name="Mug", price=100, stock=5))
    await orders.place_order(PlaceOrder(actor=customer, items=[OrderItem(quantity=1, product_id=mug.id)]))
    clock.advance(minutes=31)
    boom = RuntimeError("provider client broken")

    async def broken(**_: object) -> int:
        raise boom

    monkeypatch.setattr(payments, "resend_unsent_refunds", broken)
    chores = Housekeeping(orders, payments, chores._idempotency, chores._auth, chores._outbox, chores._oauth, clock)

    failed = await chores.run_round()

    assert [(f.job, f.error) for f in failed] == [("resend_refunds", boom)]
    assert {o.status for o in all_orders(db)} == {OrderStatus.EXPIRED}
    assert (chores.begun, chores.finished, chores.failed) == (1, 0, 1)

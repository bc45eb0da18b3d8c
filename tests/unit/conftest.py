"""Fixtures for unit tests: the core's services wired to the in-memory fakes."""

from __future__ import annotations

import pytest

from adapters.auth.skeletons import Uts39Skeletons
from core.domain.users import Actor, Role
from core.services.auth import AuthService, AuthSettings
from core.services.catalog import CatalogService
from core.services.orders import OrderService
from core.services.payments import PaymentService
from tests.fakes import (
    FakeAccessTokens,
    FakeOpaqueTokens,
    FakePasswordHasher,
    FakePaymentGateway,
    FixedClock,
    InMemoryDatabase,
    InMemoryThrottle,
    SequentialIds,
)
from tests.unit.helpers import START, stored_actor


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def ids() -> SequentialIds:
    return SequentialIds()


@pytest.fixture
def db(clock: FixedClock) -> InMemoryDatabase:
    return InMemoryDatabase(clock)


@pytest.fixture
def hasher() -> FakePasswordHasher:
    return FakePasswordHasher()


@pytest.fixture
def access_tokens(clock: FixedClock) -> FakeAccessTokens:
    return FakeAccessTokens(clock)


@pytest.fixture
def opaque() -> FakeOpaqueTokens:
    return FakeOpaqueTokens()


@pytest.fixture
def throttle(clock: FixedClock) -> InMemoryThrottle:
    return InMemoryThrottle(clock)


@pytest.fixture
def skeletons() -> Uts39Skeletons:
    # The real table: the skeleton is a pure function of Unicode's data, no I/O after loading it.
    return Uts39Skeletons()


@pytest.fixture
def auth_settings() -> AuthSettings:
    return AuthSettings()


@pytest.fixture
def auth(
    db: InMemoryDatabase,
    hasher: FakePasswordHasher,
    access_tokens: FakeAccessTokens,
    opaque: FakeOpaqueTokens,
    throttle: InMemoryThrottle,
    skeletons: Uts39Skeletons,
    clock: FixedClock,
    ids: SequentialIds,
    auth_settings: AuthSettings,
) -> AuthService:
    return AuthService(db, hasher, access_tokens, opaque, throttle, skeletons, clock, ids, auth_settings)


@pytest.fixture
def catalog(db: InMemoryDatabase, clock: FixedClock, ids: SequentialIds) -> CatalogService:
    return CatalogService(db, clock, ids, "USD")


@pytest.fixture
def gateway(clock: FixedClock) -> FakePaymentGateway:
    return FakePaymentGateway(clock)


@pytest.fixture
def orders(db: InMemoryDatabase, gateway: FakePaymentGateway, clock: FixedClock, ids: SequentialIds) -> OrderService:
    return OrderService(db, gateway, clock, ids, "USD")


@pytest.fixture
def payments(
    db: InMemoryDatabase, gateway: FakePaymentGateway, clock: FixedClock, ids: SequentialIds
) -> PaymentService:
    return PaymentService(db, gateway, clock, ids)


@pytest.fixture
def staff(db: InMemoryDatabase) -> Actor:
    return stored_actor(db, "usr_staff", Role.STAFF, "10.0.0.2")


@pytest.fixture
def admin_actor(db: InMemoryDatabase) -> Actor:
    return stored_actor(db, "usr_admin", Role.ADMIN, "10.0.0.3")


@pytest.fixture
def customer(db: InMemoryDatabase) -> Actor:
    return stored_actor(db, "usr_customer", Role.CUSTOMER, "10.0.0.4")


@pytest.fixture
def anonymous() -> Actor:
    return Actor(user_id=None, role=Role.CUSTOMER, source_ip="10.0.0.5")

"""A use case that fails after it has started writing leaves nothing behind.

The failure is forced inside the unit of work by patching the fake repository that
is written last, so every earlier write of the use case has already happened.
"""

from __future__ import annotations

from typing import Any

import pytest

from core.domain.money import Money
from core.domain.users import Actor, Role, UserStatus
from core.services.auth import AuthService, ChangePassword, LogIn, RefreshSession, RegisterUser, UpdateUser
from core.services.catalog import AdjustStock, CatalogService, CreateProduct, DeleteProduct, UpdateProduct
from tests import fakes
from tests.fakes import FakePasswordHasher, InMemoryDatabase
from tests.unit.helpers import OTHER_STRONG, STRONG, products, tokens, users


class Boom(Exception):
    pass


@pytest.fixture
def break_audit(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make every audit append fail until the returned function is called."""

    async def append(self: object, entry: object) -> None:
        raise Boom

    monkeypatch.setattr(fakes.InMemoryAuditLog, "append", append)
    return monkeypatch.undo


async def test_register_writes_no_user_when_the_audit_fails(
    auth: AuthService, db: InMemoryDatabase, break_audit: Any
) -> None:
    with pytest.raises(Boom):
        await auth.register(RegisterUser(email="alice@example.com", password=STRONG))

    assert db.store.users == {}
    break_audit()
    # The email is still free and the write lock was released.
    user = await auth.register(RegisterUser(email="alice@example.com", password=STRONG))
    assert users(db) == [user]


async def test_login_stores_no_refresh_token_when_the_audit_fails(
    auth: AuthService, db: InMemoryDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    await auth.register(RegisterUser(email="alice@example.com", password=STRONG))
    before = repr(db.store)

    async def append(self: object, entry: Any) -> None:
        raise Boom

    monkeypatch.setattr(fakes.InMemoryAuditLog, "append", append)
    with pytest.raises(Boom):
        await auth.login(LogIn(email="alice@example.com", password=STRONG))

    assert repr(db.store) == before


async def test_refresh_does_not_spend_the_token_when_issuing_the_next_fails(
    auth: AuthService, db: InMemoryDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    await auth.register(RegisterUser(email="alice@example.com", password=STRONG))
    pair = await auth.login(LogIn(email="alice@example.com", password=STRONG))

    async def add(self: object, token: Any) -> None:
        raise Boom

    with monkeypatch.context() as patched:
        patched.setattr(fakes.InMemoryRefreshTokenRepository, "add", add)
        with pytest.raises(Boom):
            await auth.refresh(RefreshSession(refresh_token=pair.refresh_token))

    assert [(t.used_at, t.revoked_at) for t in tokens(db)] == [(None, None)]
    # Not a replay: the token still works once.
    assert (await auth.refresh(RefreshSession(refresh_token=pair.refresh_token))).refresh_token


async def test_change_password_keeps_the_old_password_when_revocation_fails(
    auth: AuthService, db: InMemoryDatabase, hasher: FakePasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await auth.register(RegisterUser(email="alice@example.com", password=STRONG))
    await auth.login(LogIn(email="alice@example.com", password=STRONG))
    before = repr(db.store)

    async def revoke_all_for_user(self: object, user_id: str, at: Any) -> int:
        raise Boom

    with monkeypatch.context() as patched:
        patched.setattr(fakes.InMemoryRefreshTokenRepository, "revoke_all_for_user", revoke_all_for_user)
        with pytest.raises(Boom):
            await auth.change_password(
                ChangePassword(
                    actor=Actor(user_id=alice.id, role=Role.CUSTOMER),
                    current_password=STRONG,
                    new_password=OTHER_STRONG,
                )
            )

    assert repr(db.store) == before
    assert db.store.users[alice.id].password_hash == await hasher.hash(STRONG)
    assert (await auth.login(LogIn(email="alice@example.com", password=STRONG))).refresh_token


async def test_disabling_changes_nothing_when_the_audit_fails(
    auth: AuthService, db: InMemoryDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await auth.register(RegisterUser(email="alice@example.com", password=STRONG))
    await auth.login(LogIn(email="alice@example.com", password=STRONG))
    before = repr(db.store)

    async def append(self: object, entry: Any) -> None:
        raise Boom

    monkeypatch.setattr(fakes.InMemoryAuditLog, "append", append)
    with pytest.raises(Boom):
        await auth.update_user(
            UpdateUser(actor=Actor.operator(), user_id=alice.id, role=Role.STAFF, status=UserStatus.DISABLED)
        )

    assert repr(db.store) == before
    assert db.store.users[alice.id].status is UserStatus.ACTIVE
    assert [t.revoked_at for t in tokens(db)] == [None]


async def test_create_product_writes_nothing_when_the_audit_fails(
    catalog: CatalogService, db: InMemoryDatabase, staff: Actor, break_audit: Any
) -> None:
    with pytest.raises(Boom):
        await catalog.create_product(CreateProduct(actor=staff, sku="MUG-1", name="Mug", price=1200))

    assert db.store.products == {}
    break_audit()
    assert (
        await catalog.create_product(CreateProduct(actor=staff, sku="MUG-1", name="Mug", price=1200))
    ).sku == "MUG-1"


@pytest.mark.parametrize(
    "use_case",
    [
        lambda catalog, actor, pid: catalog.adjust_stock(AdjustStock(actor=actor, product_id=pid, delta=-2)),
        lambda catalog, actor, pid: catalog.update_product(UpdateProduct(actor=actor, product_id=pid, price=1)),
        lambda catalog, actor, pid: catalog.deactivate_product(actor, pid),
        lambda catalog, actor, pid: catalog.delete_product(DeleteProduct(actor=actor, product_id=pid)),
    ],
    ids=["adjust_stock", "update_price", "deactivate", "delete"],
)
async def test_product_changes_are_undone_when_the_audit_fails(
    catalog: CatalogService, db: InMemoryDatabase, staff: Actor, monkeypatch: pytest.MonkeyPatch, use_case: Any
) -> None:
    mug = await catalog.create_product(CreateProduct(actor=staff, sku="MUG-1", name="Mug", price=1200, stock=5))
    before = repr(db.store)

    async def append(self: object, entry: Any) -> None:
        raise Boom

    monkeypatch.setattr(fakes.InMemoryAuditLog, "append", append)
    with pytest.raises(Boom):
        await use_case(catalog, staff, mug.id)

    assert repr(db.store) == before
    assert products(db) == [mug]
    assert (products(db)[0].stock, products(db)[0].price, products(db)[0].version) == (5, Money(1200, "USD"), 1)

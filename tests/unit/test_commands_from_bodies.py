"""Commands are structured by cattrs from validated request bodies (adapters/serialization.py):
the body gives the fields it may, the entry point what no body can set."""

from __future__ import annotations

import pytest
from cattrs.errors import ClassValidationError

from adapters.serialization import command, to_wire
from core.domain.payments import PaymentMethod
from core.domain.users import Actor, Role
from core.services.auth import UpdateUser
from core.services.catalog import UpdateProduct
from core.services.orders import OrderItem, PlaceOrder
from core.services.payments import PayOrder

ALICE = Actor(user_id="usr_alice", role=Role.CUSTOMER, source_ip="203.0.113.7")


def test_an_order_body_becomes_a_command_with_its_lines() -> None:
    body = {"items": [{"sku": "MUG-1", "quantity": 2}, {"product_id": "prd_1", "quantity": 1}]}
    assert command(PlaceOrder, body, actor=ALICE) == PlaceOrder(
        actor=ALICE, items=(OrderItem(quantity=2, sku="MUG-1"), OrderItem(quantity=1, product_id="prd_1"))
    )


def test_enums_come_from_their_values_and_absent_fields_keep_their_defaults() -> None:
    assert command(UpdateUser, {"role": "staff"}, actor=ALICE, user_id="usr_2") == UpdateUser(
        actor=ALICE, user_id="usr_2", role=Role.STAFF
    )
    paid = command(PayOrder, {"method": "manual", "reference": "till 3"}, actor=ALICE, order_id="ord_1")
    assert (paid.method, paid.reference, paid.amount, paid.payment_method) == (
        PaymentMethod.MANUAL,
        "till 3",
        None,
        None,
    )
    assert command(UpdateProduct, {}, actor=ALICE, product_id="prd_1") == UpdateProduct(actor=ALICE, product_id="prd_1")


def test_what_the_entry_point_adds_wins_over_the_body_and_an_actor_is_never_data() -> None:
    sneaky = {"actor": {"user_id": "usr_admin", "role": "admin"}, "user_id": "usr_victim", "role": "admin"}
    assert command(UpdateUser, sneaky, actor=ALICE, user_id="usr_2").actor == ALICE
    with pytest.raises(ClassValidationError) as caught:
        command(UpdateUser, sneaky, user_id="usr_2")
    assert "a command's actor is the entry point's Actor" in str(caught.value.exceptions[0])


def test_an_account_on_the_wire_has_no_password_hash_and_no_skeleton() -> None:
    from datetime import UTC, datetime

    from core.domain.users import User, UserStatus

    at = datetime(2026, 1, 1, tzinfo=UTC)
    user = User(
        id="usr_1",
        email="kate@example.com",
        email_skeleton="kate@exarnple.corn",
        password_hash="$argon2id$secret",
        role=Role.ADMIN,
        status=UserStatus.ACTIVE,
        created_at=at,
        updated_at=at,
    )
    assert to_wire(user) == {
        "id": "usr_1",
        "email": "kate@example.com",
        "role": "admin",
        "status": "active",
        "created_at": at,
        "updated_at": at,
    }

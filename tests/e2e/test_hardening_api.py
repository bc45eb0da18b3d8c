"""Hostile inputs against accounts, sessions, orders and stock over real HTTP: each sends
what an attacker would and checks the error envelope and that nothing changed."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from core.domain.catalog import MAX_STOCK
from core.domain.errors import LastAdmin
from core.domain.users import Actor, Role, UserStatus
from core.services.auth import UpdateUser
from entrypoints.container import provide
from tests.e2e.conftest import (
    INTEGRITY_ERRORS,
    PASSWORD,
    Api,
    Store,
    assert_error,
    count_rows,
    create_product,
    on_every_store,
    place_order,
    rows,
    scalar,
    serve,
    stock_of,
    table_names,
    write_behind,
)

pytestmark = on_every_store

NEW_PASSWORD = "another long passphrase"


async def _until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.02)


# Throttles.
async def test_sixty_simultaneous_guesses_never_get_past_the_budget(api: Api) -> None:
    await api.create_user("target@example.com")
    guesses = [{"email": "target@example.com", "password": f"guess number {n:02d}!"} for n in range(59)]
    guesses.append({"email": "target@example.com", "password": PASSWORD})

    results = await asyncio.gather(*(api.call("POST", "/api/v1/auth/login", json=g) for g in guesses))

    statuses = sorted(status for status, _, _ in results)
    checked = [s for s in statuses if s in (200, 401)]
    assert len(checked) <= 5, statuses  # an attempt takes its place before the slow hash
    assert statuses.count(429) >= 55
    for status, body, headers in results:
        if status == 429:
            assert_error(status, body, 429, "too_many_login_attempts")
            assert int(headers["Retry-After"]) == body["error"]["details"]["retry_after"] > 0
    failed = await count_rows(api, "audit_log", "action = 'auth.login_failed'")
    assert failed == statuses.count(401)  # a refused attempt is not even audited as a try


async def test_simultaneous_password_change_guesses_are_bounded_too(api: Api) -> None:
    _, token = await api.account("victim@example.com")
    before = await scalar(api, "SELECT password_hash FROM users WHERE email = 'victim@example.com'")
    body = {"current_password": "not the password at all", "new_password": NEW_PASSWORD}

    results = await asyncio.gather(
        *(api.call("POST", "/api/v1/users/me/password", json=body, token=token) for _ in range(30))
    )

    statuses = [status for status, _, _ in results]
    assert statuses.count(401) <= 5 and statuses.count(429) >= 25 and set(statuses) <= {401, 429}
    assert await scalar(api, "SELECT password_hash FROM users WHERE email = 'victim@example.com'") == before


async def test_registrations_from_one_address_are_throttled_and_a_sign_in_still_works(api: Api) -> None:
    await api.create_user("regular@example.com")
    users_before = await count_rows(api, "users")

    flood = [
        api.call("POST", "/api/v1/auth/register", json={"email": f"bot{n}@example.com", "password": PASSWORD})
        for n in range(40)
    ]
    login = api.call("POST", "/api/v1/auth/login", json={"email": "regular@example.com", "password": PASSWORD})
    *registrations, signed_in = await asyncio.gather(*flood, login)

    assert signed_in[0] == 200
    statuses = [status for status, _, _ in registrations]
    assert statuses.count(201) <= 10
    for status, body, headers in registrations:
        if status == 429:
            assert body["error"]["code"] in ("too_many_registrations", "server_busy")
            assert_error(status, body, 429)
            assert int(headers["Retry-After"]) >= 1
    assert statuses.count(429) >= 30
    assert await count_rows(api, "users") == users_before + statuses.count(201)


# Ended sessions.
async def test_an_access_token_stops_working_when_its_session_ends(api: Api) -> None:
    staff = await api.token_for("staff@example.com", "staff")
    await create_product(api, staff, sku="MUG-1", stock=5)
    await api.create_user("shopper@example.com")
    first = await api.login("shopper@example.com")
    second = await api.login("shopper@example.com")
    order = {"items": [{"sku": "MUG-1", "quantity": 1}]}

    status, _, _ = await api.call("POST", "/api/v1/auth/logout", json={"refresh_token": first["refresh_token"]})
    assert status == 204
    status, body, headers = await api.call("GET", "/api/v1/users/me", token=first["access_token"])
    assert_error(status, body, 401, "session_ended")
    assert headers["WWW-Authenticate"].startswith("Bearer")
    status, body, _ = await api.call("POST", "/api/v1/orders", json=order, token=first["access_token"])
    assert_error(status, body, 401, "session_ended")
    assert await count_rows(api, "orders") == 0
    # The other session is not affected...
    status, _, _ = await api.call("GET", "/api/v1/users/me", token=second["access_token"])
    assert status == 200
    # ... until the password changes, which ends every session.
    status, _, _ = await api.call(
        "POST",
        "/api/v1/users/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        token=second["access_token"],
    )
    assert status == 204
    status, body, _ = await api.call("POST", "/api/v1/orders", json=order, token=second["access_token"])
    assert_error(status, body, 401, "session_ended")
    assert await stock_of(api, (await _product(api, "MUG-1"))["id"]) == 5


async def _product(api: Api, sku: str) -> dict[str, Any]:
    status, page, _ = await api.call("GET", f"/api/v1/products?q={sku}")
    assert status == 200
    (product,) = [p for p in page["data"] if p["sku"] == sku]
    return product


async def test_a_session_ended_on_one_server_is_refused_by_another_within_a_second(
    tmp_path: Path, store: Store
) -> None:
    data = tmp_path / "data"
    async with serve(data, store=store) as first, serve(data, store=store) as second:
        await first.create_user("roaming@example.com")
        tokens = await first.login("roaming@example.com")
        status, _, _ = await second.call("GET", "/api/v1/users/me", token=tokens["access_token"])
        assert status == 200

        await first.call("POST", "/api/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]})

        async def refused_there() -> bool:
            status, body, _ = await second.call("GET", "/api/v1/users/me", token=tokens["access_token"])
            return status == 401 and body["error"]["code"] == "session_ended"

        # The guard's interval is 100 ms (tests/unit show it with a clock); the deadline here
        # only keeps a broken build from hanging.
        await _until(refused_there, timeout=10)


async def test_disabling_an_account_ends_its_sessions_on_every_route(api: Api) -> None:
    admin = await api.token_for("root@example.com", "admin")
    user_id, token = await api.account("leaving@example.com")
    status, _, _ = await api.call("PATCH", f"/api/v1/users/{user_id}", json={"status": "disabled"}, token=admin)
    assert status == 200
    for method, path in (("GET", "/api/v1/users/me"), ("GET", "/api/v1/orders"), ("GET", "/api/v1/products")):
        status, body, _ = await api.call(method, path, token=token)
        assert_error(status, body, 401, "session_ended")


async def test_demoted_staff_no_longer_see_inactive_products_on_public_routes(api: Api) -> None:
    admin = await api.token_for("root@example.com", "admin")
    clerk_id, clerk = await api.account("clerk@example.com", "staff")
    hidden = await create_product(api, clerk, sku="HIDDEN-1", active=False)
    for _ in range(2):  # the second answer may come from the rendered page
        status, page, _ = await api.call("GET", "/api/v1/products", token=clerk)
        assert [p["sku"] for p in page["data"]] == ["HIDDEN-1"]

    await api.call("PATCH", f"/api/v1/users/{clerk_id}", json={"role": "customer"}, token=admin)

    status, page, _ = await api.call("GET", "/api/v1/products", token=clerk)
    assert (status, page["data"]) == (200, [])
    status, body, _ = await api.call("GET", f"/api/v1/products/{hidden['id']}", token=clerk)
    assert_error(status, body, 404, "product_not_found")
    status, page, _ = await api.call("GET", "/api/v1/products?active=false", token=clerk)
    assert (status, page["data"]) == (200, [])


# Admins.
async def test_two_admins_demoting_each_other_at_once_leave_the_store_an_admin(api: Api) -> None:
    a_id, a = await api.account("ada@example.com", "admin")
    b_id, b = await api.account("bea@example.com", "admin")

    results = await asyncio.gather(
        api.call("PATCH", f"/api/v1/users/{b_id}", json={"role": "staff"}, token=a),
        api.call("PATCH", f"/api/v1/users/{a_id}", json={"role": "staff"}, token=b),
    )

    assert sorted(status for status, _, _ in results) == [200, 403]
    for status, body, _ in results:
        if status == 403:
            assert_error(status, body, 403, "forbidden")
    assert await count_rows(api, "users", "role = 'admin' AND status = 'active'") == 1


async def test_the_last_admin_cannot_be_demoted_or_disabled(api: Api) -> None:
    admin_id, admin = await api.account("solo@example.com", "admin")
    second_id, second = await api.account("second@example.com", "admin")
    status, _, _ = await api.call("PATCH", f"/api/v1/users/{second_id}", json={"status": "disabled"}, token=admin)
    assert status == 200
    # Only the operator at the command line could still try to remove the last one: the rule
    # holds for it too (the same use case the CLI calls).
    auth = await api.container.auth_service()
    for change in ({"role": Role.CUSTOMER}, {"status": UserStatus.DISABLED}):
        with pytest.raises(LastAdmin):
            await auth.update_user(UpdateUser(actor=Actor.operator(), user_id=admin_id, **change))  # type: ignore[arg-type]
    assert await count_rows(api, "users", "role = 'admin' AND status = 'active'") == 1
    # Through the API, the disabled admin cannot act, and the active one cannot demote itself.
    status, body, _ = await api.call("PATCH", f"/api/v1/users/{admin_id}", json={"role": "staff"}, token=second)
    assert_error(status, body, 401, "session_ended")
    status, body, _ = await api.call("PATCH", f"/api/v1/users/{admin_id}", json={"role": "staff"}, token=admin)
    assert_error(status, body, 409, "cannot_change_self")


# Orders.
async def test_a_customer_cannot_cancel_an_order_paid_in_cash(api: Api) -> None:
    staff = await api.token_for("staff@example.com", "staff")
    product = await create_product(api, staff, sku="MUG-1", stock=5, price=1000)
    _, alice = await api.account("alice@example.com")
    order = await place_order(api, alice, [{"sku": "MUG-1", "quantity": 2}])
    status, _, _ = await api.call(
        "POST", f"/api/v1/orders/{order['id']}/payments", json={"method": "manual", "reference": "cash"}, token=staff
    )
    assert status == 201
    refunds, events = await count_rows(api, "refunds"), await count_rows(api, "outbox")

    status, body, _ = await api.call("POST", f"/api/v1/orders/{order['id']}/cancel", json={}, token=alice)

    assert_error(status, body, 403, "cancel_needs_staff")
    assert await count_rows(api, "refunds") == refunds and await count_rows(api, "outbox") == events
    status, now, _ = await api.call("GET", f"/api/v1/orders/{order['id']}", token=alice)
    assert (now["status"], now["amount_refunded"]) == ("paid", 0)
    assert await stock_of(api, product["id"]) == 3
    # Staff cancel it, and the refund of the cash is theirs.
    status, cancelled, _ = await api.call("POST", f"/api/v1/orders/{order['id']}/cancel", json={}, token=staff)
    assert (status, cancelled["status"], cancelled["amount_refunded"]) == (200, "cancelled", 2000)
    staff_id = (await api.call("GET", "/api/v1/users/me", token=staff))[1]["id"]
    actor = await scalar(api, "SELECT actor_id FROM audit_log WHERE action = 'refund.created'")
    assert actor == staff_id


async def test_stock_never_passes_its_ceiling_on_any_path(api: Api) -> None:
    staff = await api.token_for("staff@example.com", "staff")
    _, alice = await api.account("alice@example.com")
    product = await create_product(api, staff, sku="EBOOK-1", stock=MAX_STOCK, price=100)
    order = await place_order(api, alice, [{"sku": "EBOOK-1", "quantity": 1000}])
    status, topped, _ = await api.call(
        "POST", f"/api/v1/products/{product['id']}/stock", json={"delta": 1000}, token=staff
    )
    assert (status, topped["stock"]) == (200, MAX_STOCK)
    status, body, _ = await api.call("POST", f"/api/v1/products/{product['id']}/stock", json={"delta": 1}, token=staff)
    assert_error(status, body, 422)

    status, _, _ = await api.call("POST", f"/api/v1/orders/{order['id']}/cancel", json={}, token=alice)
    assert status == 200
    assert await stock_of(api, product["id"]) == MAX_STOCK  # not 1,000,001,000
    status, after, _ = await api.call(
        "POST", f"/api/v1/products/{product['id']}/stock", json={"delta": -1}, token=staff
    )
    assert (status, after["stock"]) == (200, MAX_STOCK - 1)
    # The schema holds the line too, whoever writes.
    with pytest.raises(INTEGRITY_ERRORS, match="ceiling"):
        await write_behind(api, "UPDATE products SET stock = ? WHERE id = ?", MAX_STOCK + 1, product["id"])
    assert await stock_of(api, product["id"]) == MAX_STOCK - 1


# Emails.
async def test_look_alike_emails_are_refused(api: Api) -> None:
    status, _, _ = await api.call(
        "POST", "/api/v1/auth/register", json={"email": "kate@example.com", "password": PASSWORD}
    )
    assert status == 201
    for lookalike in ("ｋate@example.com", "kаte@example.com", "KATE@example.com"):
        status, body, _ = await api.call(
            "POST", "/api/v1/auth/register", json={"email": lookalike, "password": PASSWORD}
        )
        assert_error(status, body, 409, "email_taken")
    for invisible in ("kate\u200b@example.com", "kat\u00ade@example.com", "\u202ekate@example.com"):
        status, body, _ = await api.call(
            "POST", "/api/v1/auth/register", json={"email": invisible, "password": PASSWORD}
        )
        assert_error(status, body, 422)
    assert await count_rows(api, "users") == 1


# Idempotency keys keep no digest a password can be recovered from.
def _bytes(value: str | bytes | memoryview | dict[str, Any] | list[Any]) -> bytes:
    """A stored value as bytes: text encoded, JSON (PostgreSQL's jsonb) serialized."""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, dict | list):
        return orjson.dumps(value)
    return bytes(value)


async def test_no_column_holds_anything_a_password_can_be_recovered_from(api: Api) -> None:
    email, password = "secretive@example.com", "a passphrase nobody knows 42"
    body = {"email": email, "password": password}
    status, _, _ = await api.call("POST", "/api/v1/auth/register", json=body, headers={"Idempotency-Key": "reg-1"})
    assert status == 201
    _, token = await api.account("other@example.com")
    status, _, _ = await api.call(
        "POST",
        "/api/v1/users/me/password",
        json={"current_password": PASSWORD, "new_password": password},
        token=token,
        headers={"Idempotency-Key": "pw-1"},
    )
    assert status == 204

    values: list[bytes] = []
    for table in await table_names(api):
        for row in await rows(api, f'SELECT * FROM "{table}"'):
            values += [_bytes(v) for v in row if isinstance(v, str | bytes | memoryview | dict | list)]
    assert any(b"reg-1" in v for v in values)  # the claim itself is there
    secret = password.encode()
    assert not any(secret in v for v in values)
    # Every form of the request an unkeyed digest could have been taken of, and the digests.
    bodies = [
        orjson.dumps(b, option=orjson.OPT_SORT_KEYS)
        for b in (body, {"current_password": PASSWORD, "new_password": password})
    ]
    messages = [secret, *bodies]
    for method, path in itertools.product((b"POST",), (b"/api/v1/auth/register", b"/api/v1/users/me/password")):
        messages += [b"%s %s\n%s" % (method, path, b) for b in bodies]
    digests = set()
    for message in messages:
        for name in ("md5", "sha1", "sha256", "sha512", "blake2b", "sha3_256"):
            digest = hashlib.new(name, message).digest()
            digests |= {digest, digest.hex().encode()}
    assert not any(v in digests for v in values)
    # What is stored is keyed: recomputing it needs the server's key.
    fingerprint = await scalar(api, "SELECT fingerprint FROM idempotency_keys WHERE key = 'reg-1'")
    # The key: the keys directory's file on SQLite, the store's secret on PostgreSQL.
    digests_key = (await provide(api.container.request_digests)).load()
    expected = hmac.new(digests_key, b"POST /api/v1/auth/register\n" + bodies[0], "sha256").hexdigest()
    assert fingerprint == expected

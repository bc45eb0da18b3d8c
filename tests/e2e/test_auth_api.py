"""Accounts and sessions over real HTTP."""

from __future__ import annotations

import asyncio

import pytest

from tests.e2e.conftest import PASSWORD, Api, assert_error, count_rows, on_every_store

pytestmark = on_every_store


async def test_register_login_me_refresh_logout(api: Api) -> None:
    status, user, _ = await api.call(
        "POST", "/api/v1/auth/register", json={"email": "Ann@Example.com", "password": PASSWORD}
    )
    assert status == 201
    assert user["email"] == "ann@example.com"
    assert user["role"] == "customer" and user["status"] == "active"
    assert set(user) == {"id", "email", "role", "status", "created_at", "updated_at"}

    tokens = await api.login("ann@example.com")
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 900
    status, me, _ = await api.call("GET", "/api/v1/users/me", token=tokens["access_token"])
    assert status == 200 and me == user

    status, refreshed, _ = await api.call(
        "POST", "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert status == 200
    assert refreshed["refresh_token"] != tokens["refresh_token"]

    status, _, _ = await api.call("POST", "/api/v1/auth/logout", json={"refresh_token": refreshed["refresh_token"]})
    assert status == 204
    status, body, _ = await api.call("POST", "/api/v1/auth/refresh", json={"refresh_token": refreshed["refresh_token"]})
    assert_error(status, body, 401, "invalid_token")


async def test_replayed_refresh_token_revokes_the_family(api: Api) -> None:
    await api.create_user("bob@example.com")
    first = await api.login("bob@example.com")
    status, second, _ = await api.call("POST", "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert status == 200
    status, body, _ = await api.call("POST", "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert_error(status, body, 401, "refresh_token_reused")
    # The thief's replay also ends the legitimate holder's newer token.
    status, body, _ = await api.call("POST", "/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert_error(status, body, 401, "invalid_token")


async def test_concurrent_refreshes_of_one_token_succeed_once(api: Api) -> None:
    await api.create_user("carl@example.com")
    tokens = await api.login("carl@example.com")
    results = await asyncio.gather(
        *(api.call("POST", "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}) for _ in range(10))
    )
    statuses = sorted(r[0] for r in results)
    assert statuses.count(200) == 1
    assert statuses.count(401) == 9


async def test_login_failures_are_throttled_with_retry_after(api: Api) -> None:
    await api.create_user("dan@example.com")
    for _ in range(5):
        status, body, _ = await api.call(
            "POST", "/api/v1/auth/login", json={"email": "dan@example.com", "password": "wrong password!"}
        )
        assert_error(status, body, 401, "invalid_credentials")
    status, body, headers = await api.call(
        "POST", "/api/v1/auth/login", json={"email": "dan@example.com", "password": PASSWORD}
    )
    assert_error(status, body, 429, "too_many_login_attempts")
    assert 1 <= int(headers["Retry-After"]) <= 900


async def test_unknown_email_and_wrong_password_look_the_same(api: Api) -> None:
    await api.create_user("eve@example.com")
    s1, b1, _ = await api.call(
        "POST", "/api/v1/auth/login", json={"email": "eve@example.com", "password": "not her password"}
    )
    s2, b2, _ = await api.call(
        "POST", "/api/v1/auth/login", json={"email": "nobody@example.com", "password": "not her password"}
    )
    assert s1 == s2 == 401
    assert b1["error"]["code"] == b2["error"]["code"] == "invalid_credentials"
    assert b1["error"]["message"] == b2["error"]["message"]


async def test_register_refuses_weak_passwords_duplicates_and_privileged_fields(api: Api) -> None:
    status, body, _ = await api.call(
        "POST", "/api/v1/auth/register", json={"email": "f@example.com", "password": "short"}
    )
    # Found by the schema (too short) or by the policy (too common): one shape.
    assert_error(status, body, 422, "validation_failed")
    assert body["error"]["details"] == {"fields": {"password": "must have at least 12 characters"}}
    status, body, _ = await api.call(
        "POST", "/api/v1/auth/register", json={"email": "f@example.com", "password": "password1234"}
    )
    assert_error(status, body, 422, "validation_failed")
    assert body["error"]["details"] == {"fields": {"password": "is too common or too easy to guess; choose another"}}
    status, body, _ = await api.call(
        "POST",
        "/api/v1/auth/register",
        json={
            "email": "f@example.com",
            "password": PASSWORD,
            "role": "admin",
            "id": "usr_x",
            "status": "active",
            "created_at": "2020-01-01T00:00:00Z",
        },
    )
    assert_error(status, body, 422, "validation_failed")
    assert set(body["error"]["details"]["fields"]) == {"role", "id", "status", "created_at"}
    status, _, _ = await api.call(
        "POST", "/api/v1/auth/register", json={"email": "f@example.com", "password": PASSWORD}
    )
    assert status == 201
    status, body, _ = await api.call(
        "POST", "/api/v1/auth/register", json={"email": "F@EXAMPLE.COM", "password": PASSWORD}
    )
    assert_error(status, body, 409, "email_taken")
    status, body, _ = await api.call(
        "POST", "/api/v1/auth/register", json={"email": "not-an-email", "password": PASSWORD}
    )
    assert_error(status, body, 422, "validation_failed")
    assert body["error"]["details"] == {"fields": {"email": "is not a valid email address"}}
    assert await count_rows(api, "users") == 1


async def test_change_password_ends_sessions(api: Api) -> None:
    await api.create_user("gus@example.com")
    tokens = await api.login("gus@example.com")
    new = "a brand new passphrase"
    status, body, _ = await api.call(
        "POST",
        "/api/v1/users/me/password",
        token=tokens["access_token"],
        json={"current_password": "wrong one here", "new_password": new},
    )
    assert_error(status, body, 401, "invalid_credentials")
    status, _, _ = await api.call(
        "POST",
        "/api/v1/users/me/password",
        token=tokens["access_token"],
        json={"current_password": PASSWORD, "new_password": new},
    )
    assert status == 204
    status, body, _ = await api.call("POST", "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert_error(status, body, 401)
    await api.login("gus@example.com", new)


@pytest.mark.parametrize(
    ("new_password", "problem"),
    [
        ("short", "must have at least 12 characters"),  # found by the schema
        ("password1234", "is too common or too easy to guess; choose another"),  # by the policy
        ("ivy@example.com", "must not be the account's email address"),
    ],
)
async def test_a_refused_new_password_names_new_password(api: Api, new_password: str, problem: str) -> None:
    await api.create_user("ivy@example.com")
    tokens = await api.login("ivy@example.com")
    status, body, _ = await api.call(
        "POST",
        "/api/v1/users/me/password",
        token=tokens["access_token"],
        json={"current_password": PASSWORD, "new_password": new_password},
    )
    assert_error(status, body, 422, "validation_failed")
    assert body["error"]["details"] == {"fields": {"new_password": problem}}
    await api.login("ivy@example.com")  # the password is unchanged
    status, _, _ = await api.call("POST", "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert status == 200  # and the session still stands


async def test_admin_lists_users_and_changes_role_and_status(api: Api) -> None:
    admin = await api.token_for("root@example.com", "admin")
    customer_id = await api.create_user("hal@example.com")
    customer = await api.login("hal@example.com")

    status, body, _ = await api.call("GET", "/api/v1/users", token=customer["access_token"])
    assert_error(status, body, 403, "forbidden")
    status, page, _ = await api.call("GET", "/api/v1/users?limit=1", token=admin)
    assert status == 200 and len(page["data"]) == 1 and page["meta"]["has_more"] is True
    status, page2, _ = await api.call("GET", f"/api/v1/users?limit=1&cursor={page['meta']['next_cursor']}", token=admin)
    assert status == 200 and page2["data"][0]["id"] != page["data"][0]["id"]
    assert page2["meta"] == {"has_more": False, "next_cursor": None}

    status, user, _ = await api.call("PATCH", f"/api/v1/users/{customer_id}", token=admin, json={"role": "staff"})
    assert status == 200 and user["role"] == "staff"
    status, user, _ = await api.call("PATCH", f"/api/v1/users/{customer_id}", token=admin, json={"status": "disabled"})
    assert status == 200 and user["status"] == "disabled"
    # Disabling revoked the refresh token and blocks new logins.
    status, body, _ = await api.call("POST", "/api/v1/auth/refresh", json={"refresh_token": customer["refresh_token"]})
    assert_error(status, body, 401)
    status, body, _ = await api.call(
        "POST", "/api/v1/auth/login", json={"email": "hal@example.com", "password": PASSWORD}
    )
    assert_error(status, body, 403, "account_disabled")

    status, body, _ = await api.call("PATCH", "/api/v1/users/usr_nope", token=admin, json={"role": "staff"})
    assert_error(status, body, 404, "user_not_found")
    status, body, _ = await api.call("PATCH", f"/api/v1/users/{customer_id}", token=admin, json={"role": "owner"})
    assert_error(status, body, 422, "validation_failed")
    status, body, _ = await api.call(
        "PATCH", f"/api/v1/users/{customer_id}", token=admin, json={"email": "x@example.com"}
    )
    assert_error(status, body, 422, "validation_failed")


async def test_logins_and_role_changes_are_audited(api: Api) -> None:
    admin = await api.token_for("audit@example.com", "admin")
    target = await api.create_user("ivy@example.com")
    await api.call("POST", "/api/v1/auth/login", json={"email": "ivy@example.com", "password": "wrong password"})
    await api.call("PATCH", f"/api/v1/users/{target}", token=admin, json={"role": "staff"})
    from core.domain.pagination import PageRequest
    from core.ports.repositories import AuditFilter

    database = await api.container.database()
    async with database(readonly=True) as uow:
        entries = (await uow.audit.list(PageRequest(limit=100), AuditFilter())).items
    actions = [(e.action, e.object_id) for e in entries]
    assert ("auth.login_failed", target) in actions
    assert ("auth.login_succeeded", None) not in actions
    changed = next(e for e in entries if e.action == "user.role_changed")
    assert changed.details == {"before": "customer", "after": "staff"}
    assert changed.source_ip == "127.0.0.1"
    assert changed.actor_id is not None


async def test_users_me_is_not_a_user_id(api: Api) -> None:
    admin = await api.token_for("me@example.com", "admin")
    status, body, headers = await api.call("PATCH", "/api/v1/users/me", token=admin, json={"role": "staff"})
    assert_error(status, body, 405, "method_not_allowed")
    assert headers["Allow"] == "GET,HEAD"
    status, me, _ = await api.call("GET", "/api/v1/users/me", token=admin)
    assert status == 200
    assert me["role"] == "admin"


async def test_a_demoted_or_disabled_admin_loses_powers_before_the_token_expires(api: Api) -> None:
    root = await api.token_for("root2@example.com", "admin")
    other_id = await api.create_user("other-admin@example.com", "admin")
    other = (await api.login("other-admin@example.com"))["access_token"]
    status, _, _ = await api.call("GET", "/api/v1/users", token=other)
    assert status == 200
    await api.call("PATCH", f"/api/v1/users/{other_id}", token=root, json={"role": "staff"})
    status, body, _ = await api.call("GET", "/api/v1/users", token=other)
    assert_error(status, body, 403, "forbidden")
    status, _, _ = await api.call(
        "POST", "/api/v1/products", token=other, json={"sku": "OK-1", "name": "Still staff", "price": 1}
    )
    assert status == 201
    await api.call("PATCH", f"/api/v1/users/{other_id}", token=root, json={"status": "disabled"})
    status, body, _ = await api.call(
        "POST", "/api/v1/products", token=other, json={"sku": "NO-1", "name": "Disabled", "price": 1}
    )
    assert_error(status, body, 401, "session_ended")


async def test_users_me_follows_changes_to_the_account(api: Api) -> None:
    root = await api.token_for("root3@example.com", "admin")
    user_id = await api.create_user("fol@example.com")
    token = (await api.login("fol@example.com"))["access_token"]
    for _ in range(2):  # the second answer may come from the rendered copy
        status, me, _ = await api.call("GET", "/api/v1/users/me", token=token)
        assert (status, me["role"]) == (200, "customer")
    await api.call("PATCH", f"/api/v1/users/{user_id}", token=root, json={"role": "staff"})
    status, me, _ = await api.call("GET", "/api/v1/users/me", token=token)
    assert (status, me["role"]) == (200, "staff")
    await api.call("PATCH", f"/api/v1/users/{user_id}", token=root, json={"status": "disabled"})
    status, body, _ = await api.call("GET", "/api/v1/users/me", token=token)
    assert_error(status, body, 401, "session_ended")


async def test_demoted_staff_and_disabled_customers_lose_powers_on_customer_routes_too(api: Api) -> None:
    root = await api.token_for("root4@example.com", "admin")
    clerk_id = await api.create_user("clerk@example.com", "staff")
    clerk = (await api.login("clerk@example.com"))["access_token"]
    buyer_id = await api.create_user("buyer4@example.com")
    buyer = (await api.login("buyer4@example.com"))["access_token"]
    status, mug, _ = await api.call(
        "POST", "/api/v1/products", token=clerk, json={"sku": "DEM-1", "name": "Mug", "price": 500, "stock": 5}
    )
    assert status == 201
    status, order, _ = await api.call(
        "POST", "/api/v1/orders", token=buyer, json={"items": [{"sku": "DEM-1", "quantity": 1}]}
    )
    assert status == 201

    await api.call("PATCH", f"/api/v1/users/{clerk_id}", token=root, json={"role": "customer"})
    # The token still says staff; the account no longer is: no manual payment, no one else's order.
    status, body, _ = await api.call(
        "POST", f"/api/v1/orders/{order['id']}/payments", token=clerk, json={"method": "manual", "reference": "cash"}
    )
    assert_error(status, body, 403, "forbidden")
    status, body, _ = await api.call("POST", f"/api/v1/orders/{order['id']}/cancel", token=clerk, json={})
    assert_error(status, body, 404, "order_not_found")
    status, body, _ = await api.call("GET", f"/api/v1/orders/{order['id']}", token=clerk)
    assert_error(status, body, 404, "order_not_found")

    await api.call("PATCH", f"/api/v1/users/{buyer_id}", token=root, json={"status": "disabled"})
    status, body, _ = await api.call(
        "POST", "/api/v1/orders", token=buyer, json={"items": [{"sku": "DEM-1", "quantity": 1}]}
    )
    assert_error(status, body, 401, "session_ended")
    status, got, _ = await api.call("GET", f"/api/v1/products/{mug['id']}")
    assert got["stock"] == 4  # only the first order's unit is reserved

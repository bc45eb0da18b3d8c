"""Personal API keys over real HTTP: made by an admin, used by a script as a bearer token,
narrowed to their scopes and to their owner's role as it is at each request, revoked at once."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from core.domain.users import Actor, Role, UserStatus
from core.services.auth import UpdateUser
from tests.e2e.conftest import (
    Api,
    MovableClock,
    assert_error,
    create_product,
    on_every_store,
    place_order,
    rows,
)

pytestmark = on_every_store

KEYS = "/api/v1/users/me/api-keys"
FIELDS = {"id", "user_id", "name", "scopes", "created_at", "expires_at", "last_used_at", "revoked_at"}


async def make_key(api: Api, token: str, scopes: list[str], **fields: Any) -> dict[str, Any]:
    body = {"name": "Nightly export", "scopes": scopes, "expires_in_days": 30, **fields}
    status, key, headers = await api.call("POST", KEYS, json=body, token=token)
    assert status == 201, key
    assert headers["Cache-Control"] == "no-store"
    return key


async def operator_update(api: Api, user_id: str, **change: Any) -> None:
    auth = await api.container.auth_service()
    await auth.update_user(UpdateUser(actor=Actor.operator(), user_id=user_id, **change))


async def test_a_read_only_key_reads_products_and_orders_and_is_refused_writes_then_revoked(api: Api) -> None:
    admin_id, admin = await api.account("ada@example.com", "admin")
    await create_product(api, admin)
    _, customer = await api.account("cy@example.com")
    status, products, _ = await api.call("GET", "/api/v1/products", token=customer)
    order = await place_order(api, customer, [{"product_id": products["data"][0]["id"], "quantity": 1}])

    key = await make_key(api, admin, ["orders:read", "catalog:read"])
    secret = key.pop("secret")
    assert secret.startswith("tbk_") and len(secret) >= 47
    assert set(key) == FIELDS
    assert key["user_id"] == admin_id and key["name"] == "Nightly export"
    assert key["scopes"] == ["catalog:read", "orders:read"]
    assert (key["last_used_at"], key["revoked_at"]) == (None, None)
    created = datetime.fromisoformat(key["created_at"])
    assert (datetime.fromisoformat(key["expires_at"]) - created).days == 30
    # Only the keyed digest is stored: neither the secret nor its plain SHA-256.
    [(digest,)] = await rows(api, "SELECT secret_digest FROM api_keys WHERE id = ?", key["id"])
    assert secret not in digest and len(digest) == 64

    status, listed, _ = await api.call("GET", "/api/v1/products", token=secret)
    assert status == 200 and [p["sku"] for p in listed["data"]] == ["SKU-1"]
    status, orders, _ = await api.call("GET", "/api/v1/orders", token=secret)
    assert status == 200 and [o["id"] for o in orders["data"]] == [order["id"]]  # an admin sees every order

    body = {"sku": "SKU-2", "name": "Red mug", "price": 900}
    status, refused, headers = await api.call("POST", "/api/v1/products", json=body, token=secret)
    assert_error(status, refused, 403, "insufficient_scope")
    assert refused["error"]["details"] == {"scope": "catalog:write"}
    assert headers["WWW-Authenticate"] == 'Bearer realm="tillbox", error="insufficient_scope", scope="catalog:write"'
    assert await rows(api, "SELECT count(*) FROM products WHERE sku = ?", "SKU-2") == [(0,)]

    status, revoked, _ = await api.call("DELETE", f"{KEYS}/{key['id']}", token=admin)
    assert status == 200 and revoked["revoked_at"] is not None and revoked["id"] == key["id"]
    status, body, headers = await api.call("GET", "/api/v1/products", token=secret)
    assert_error(status, body, 401, "invalid_token")
    assert headers["WWW-Authenticate"] == 'Bearer realm="tillbox"'
    actions = await rows(api, "SELECT action, actor_id FROM audit_log WHERE object_id = ? ORDER BY id", key["id"])
    assert actions == [("api_key.created", admin_id), ("api_key.revoked", admin_id)]
    [(details,)] = await rows(api, "SELECT details FROM audit_log WHERE action = 'api_key.created'")
    assert secret not in str(details) and digest not in str(details)


async def test_last_use_appears_in_the_list(api: Api) -> None:
    _, admin = await api.account("ada@example.com", "admin")
    first = await make_key(api, admin, ["catalog:read"], name="first")
    second = await make_key(api, admin, ["catalog:read"], name="second")
    status, _, _ = await api.call("GET", "/api/v1/products", token=first["secret"])
    assert status == 200

    status, page, _ = await api.call("GET", KEYS, token=admin)
    assert status == 200
    assert [k["id"] for k in page["data"]] == [second["id"], first["id"]]
    assert page["meta"] == {"has_more": False, "next_cursor": None}
    assert all(set(k) == FIELDS for k in page["data"])  # no secret, no digest
    assert page["data"][1]["last_used_at"] is not None and page["data"][0]["last_used_at"] is None
    status, one, _ = await api.call("GET", f"{KEYS}?limit=1", token=admin)
    assert [k["id"] for k in one["data"]] == [second["id"]] and one["meta"]["has_more"] is True


async def test_an_expired_key_is_refused(clock_api: Api, clock: MovableClock) -> None:
    api = clock_api
    _, admin = await api.account("ada@example.com", "admin")
    key = await make_key(api, admin, ["catalog:read"], expires_in_days=1)
    status, _, _ = await api.call("GET", "/api/v1/products", token=key["secret"])
    assert status == 200
    clock.advance(days=1, seconds=1)
    status, body, _ = await api.call("GET", "/api/v1/products", token=key["secret"])
    assert_error(status, body, 401, "invalid_token")


async def test_staff_cannot_create_keys(api: Api) -> None:
    _, staff = await api.account("sam@example.com", "staff")
    _, customer = await api.account("cy@example.com")
    for token in (staff, customer):
        body = {"name": "mine", "scopes": ["catalog:read"], "expires_in_days": 30}
        status, refused, _ = await api.call("POST", KEYS, json=body, token=token)
        assert_error(status, refused, 403, "forbidden")
    assert await rows(api, "SELECT count(*) FROM api_keys") == [(0,)]


async def test_a_key_cannot_create_or_list_keys(api: Api) -> None:
    _, admin = await api.account("ada@example.com", "admin")
    key = await make_key(api, admin, ["users:read", "users:write"])
    body = {"name": "child", "scopes": ["catalog:read"], "expires_in_days": 30}
    status, refused, _ = await api.call("POST", KEYS, json=body, token=key["secret"])
    assert_error(status, refused, 403, "forbidden")
    assert "cannot be created with an API key" in refused["error"]["message"]
    status, refused, _ = await api.call("GET", KEYS, token=key["secret"])
    assert_error(status, refused, 403, "forbidden")
    assert await rows(api, "SELECT count(*) FROM api_keys") == [(1,)]


async def test_bad_requests_are_refused_clearly_and_write_nothing(api: Api) -> None:
    _, admin = await api.account("ada@example.com", "admin")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"name": "x", "scopes": ["catalog:fly"], "expires_in_days": 30}, "scopes[0]"),
        ({"name": "x", "scopes": [], "expires_in_days": 30}, "scopes"),
        ({"name": "x", "scopes": ["catalog:read", "catalog:read"], "expires_in_days": 30}, "scopes"),
        ({"name": "x", "scopes": ["catalog:read"], "expires_in_days": 366}, "expires_in_days"),
        ({"name": "x", "scopes": ["catalog:read"], "expires_in_days": 0}, "expires_in_days"),
        ({"name": "", "scopes": ["catalog:read"], "expires_in_days": 30}, "name"),
        ({"name": "x" * 101, "scopes": ["catalog:read"], "expires_in_days": 30}, "name"),
        ({"name": "x", "scopes": ["catalog:read"], "expires_in_days": 30, "user_id": "usr_1"}, "user_id"),
        ({"name": "x", "scopes": ["catalog:read"]}, "expires_in_days"),
    ]
    for body, field in cases:
        status, refused, _ = await api.call("POST", KEYS, json=body, token=admin)
        assert_error(status, refused, 422, "validation_failed")
        assert field in refused["error"]["details"]["fields"], (body, refused)
    assert await rows(api, "SELECT count(*) FROM api_keys") == [(0,)]


async def test_idempotency_keys_never_replay_a_secret(api: Api) -> None:
    _, admin = await api.account("ada@example.com", "admin")
    body = {"name": "x", "scopes": ["catalog:read"], "expires_in_days": 30}
    headers = {"Idempotency-Key": "same-key"}
    first = await api.call("POST", KEYS, json=body, token=admin, headers=headers)
    second = await api.call("POST", KEYS, json=body, token=admin, headers=headers)
    assert (first[0], second[0]) == (201, 201)
    assert "Idempotent-Replayed" not in second[2]
    assert first[1]["secret"] != second[1]["secret"]
    assert await rows(api, "SELECT count(*) FROM idempotency_keys") == [(0,)]


async def test_a_demoted_owner_key_loses_the_admin_only_scopes_and_a_disabled_owner_key_is_refused(
    api: Api,
) -> None:
    admin_id, admin = await api.account("ada@example.com", "admin")
    await api.create_user("root@example.com", "admin")  # the store keeps an active admin
    key = await make_key(api, admin, ["audit:read", "catalog:read", "catalog:write"])
    secret = key["secret"]
    status, _, _ = await api.call("GET", "/api/v1/admin/audit", token=secret)
    assert status == 200

    await operator_update(api, admin_id, role=Role.STAFF)
    status, body, headers = await api.call("GET", "/api/v1/admin/audit", token=secret)
    assert_error(status, body, 403, "insufficient_scope")  # no longer the role's: narrowed away
    assert 'scope="audit:read"' in headers["WWW-Authenticate"]
    await create_product(api, secret, sku="SKU-STAFF")  # staff may still write the catalog
    # The demoted owner still lists and revokes what they made; makes no more.
    status, page, _ = await api.call("GET", KEYS, token=(await api.login("ada@example.com"))["access_token"])
    assert status == 200 and [k["id"] for k in page["data"]] == [key["id"]]

    await operator_update(api, admin_id, role=Role.ADMIN)
    status, _, _ = await api.call("GET", "/api/v1/admin/audit", token=secret)
    assert status == 200
    await operator_update(api, admin_id, status=UserStatus.DISABLED)
    status, body, _ = await api.call("GET", "/api/v1/products", token=secret)
    assert_error(status, body, 401, "invalid_token")
    assert body["error"]["message"] == "The account of this API key no longer exists or is disabled."


async def test_only_the_owner_or_an_admin_revokes_a_key(api: Api) -> None:
    _, ada = await api.account("ada@example.com", "admin")
    _, bob = await api.account("bob@example.com", "admin")
    _, sam = await api.account("sam@example.com", "staff")
    key = await make_key(api, ada, ["catalog:read"])

    status, body, _ = await api.call("DELETE", f"{KEYS}/{key['id']}", token=sam)
    assert_error(status, body, 404, "api_key_not_found")
    status, _, _ = await api.call("GET", "/api/v1/products", token=key["secret"])
    assert status == 200
    status, body, _ = await api.call("DELETE", f"{KEYS}/key_unknown", token=ada)
    assert_error(status, body, 404, "api_key_not_found")

    status, revoked, _ = await api.call("DELETE", f"{KEYS}/{key['id']}", token=bob)
    assert status == 200 and revoked["revoked_at"] is not None
    status, _, _ = await api.call("GET", "/api/v1/products", token=key["secret"])
    assert status == 401
    # Bob's list is his own: Ada's key is not in it.
    status, page, _ = await api.call("GET", KEYS, token=bob)
    assert (status, page["data"]) == (200, [])


async def test_an_unknown_or_malformed_key_is_an_invalid_token(api: Api) -> None:
    for secret in ("tbk_" + "A" * 43, "tbk_x"):
        status, body, _ = await api.call("GET", "/api/v1/products", token=secret)
        assert_error(status, body, 401, "invalid_token")

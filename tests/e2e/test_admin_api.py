"""The audit log over HTTP."""

from __future__ import annotations

from tests.e2e.conftest import Api, assert_error, on_every_store

pytestmark = on_every_store


async def test_admins_read_the_audit_log_newest_first_with_filters(api: Api) -> None:
    admin = await api.token_for("aud-admin@example.com", "admin")
    staff = await api.token_for("aud-staff@example.com", "staff")
    status, product, _ = await api.call(
        "POST", "/api/v1/products", token=staff, json={"sku": "AUD-1", "name": "Audited", "price": 100}
    )
    await api.call("PATCH", f"/api/v1/products/{product['id']}", token=staff, json={"price": 150})
    await api.call(
        "POST", "/api/v1/auth/login", json={"email": "aud-staff@example.com", "password": "not the password"}
    )

    status, body, _ = await api.call("GET", "/api/v1/admin/audit?limit=100", token=admin)
    assert status == 200
    actions = [e["action"] for e in body["data"]]
    assert actions[:3] == ["auth.login_failed", "product.price_changed", "product.created"]
    assert [e["id"] for e in body["data"]] == sorted((e["id"] for e in body["data"]), reverse=True)

    status, body, _ = await api.call("GET", f"/api/v1/admin/audit?object_id={product['id']}", token=admin)
    assert [(e["action"], e["details"]) for e in body["data"]] == [
        ("product.price_changed", {"before": 100, "after": 150}),
        ("product.created", {"sku": "AUD-1", "price": 100, "stock": 0}),
    ]
    status, body, _ = await api.call("GET", "/api/v1/admin/audit?action=auth.login_failed", token=admin)
    assert len(body["data"]) == 1
    assert body["data"][0]["actor_id"] is None
    assert body["data"][0]["source_ip"] == "127.0.0.1"

    status, first, _ = await api.call("GET", "/api/v1/admin/audit?limit=2", token=admin)
    status, second, _ = await api.call(
        "GET", f"/api/v1/admin/audit?limit=2&cursor={first['meta']['next_cursor']}", token=admin
    )
    assert {e["id"] for e in first["data"]}.isdisjoint(e["id"] for e in second["data"])
    assert max(e["id"] for e in second["data"]) < min(e["id"] for e in first["data"])

    status, body, _ = await api.call("GET", "/api/v1/admin/audit", token=staff)
    assert_error(status, body, 403, "forbidden")
    status, body, _ = await api.call("GET", "/api/v1/admin/audit")
    assert_error(status, body, 401, "authentication_required")

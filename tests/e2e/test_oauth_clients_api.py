"""The OAuth client registry over HTTP: admins only, secrets shown once and never stored
(nor replayed), every refusal in the envelope with nothing written."""

from __future__ import annotations

from typing import Any

import pytest

from core.domain.errors import InvalidClient
from tests.e2e.conftest import Api, assert_error, on_every_store, rows

pytestmark = on_every_store

BASE = "/api/v1/admin/oauth-clients"
REPORTS: dict[str, Any] = {
    "name": "Reports",
    "type": "confidential",
    "redirect_uris": ["https://reports.example.com/cb", "http://127.0.0.1:8400/cb"],
    "grant_types": ["refresh_token", "authorization_code", "client_credentials"],
    "scopes": ["orders:read", "catalog:read"],
}
FIELDS = {
    "id",
    "name",
    "type",
    "redirect_uris",
    "grant_types",
    "scopes",
    "status",
    "secret_rotated_at",
    "created_at",
    "updated_at",
    "created_by",
}


async def _written(api: Api) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Everything a client's registration or change writes: the clients and their audit."""
    clients = await rows(api, "SELECT * FROM oauth_clients ORDER BY id")
    audit = await rows(api, "SELECT action, object_id FROM audit_log WHERE object_type = 'oauth_client' ORDER BY id")
    return clients, audit


async def test_an_admin_registers_reads_lists_and_changes_a_client(api: Api) -> None:
    admin_id, admin = await api.account("oc-admin@example.com", "admin")

    status, made, headers = await api.call("POST", BASE, token=admin, json=REPORTS)

    assert status == 201, made
    assert set(made) == FIELDS | {"client_secret"}
    client_id = made["id"]
    assert client_id.startswith("cli_") and headers["Location"] == f"{BASE}/{client_id}"
    assert made["client_secret"].startswith("tbcs_") and len(made["client_secret"]) == 48
    assert (made["name"], made["type"], made["status"], made["created_by"]) == (
        "Reports",
        "confidential",
        "active",
        admin_id,
    )
    assert made["redirect_uris"] == REPORTS["redirect_uris"]
    assert made["grant_types"] == ["authorization_code", "refresh_token", "client_credentials"]
    assert made["scopes"] == ["catalog:read", "orders:read"]
    assert made["secret_rotated_at"] == made["created_at"] == made["updated_at"]

    shown = {key: value for key, value in made.items() if key != "client_secret"}
    status, body, _ = await api.call("GET", f"{BASE}/{client_id}", token=admin)
    assert (status, body) == (200, shown)
    status, page, _ = await api.call("GET", BASE, token=admin)
    assert (status, page) == (200, {"data": [shown], "meta": {"has_more": False, "next_cursor": None}})

    # Only a keyed digest is stored: the secret appears nowhere in the store.
    (stored,) = await rows(api, "SELECT secret_digest FROM oauth_clients")
    assert stored[0] and made["client_secret"] not in str(stored)
    dumped = str(await rows(api, "SELECT * FROM oauth_clients")) + str(await rows(api, "SELECT * FROM audit_log"))
    assert made["client_secret"] not in dumped and made["client_secret"][5:] not in dumped

    status, changed, _ = await api.call(
        "PATCH",
        f"{BASE}/{client_id}",
        token=admin,
        json={"name": "Reports v2", "scopes": ["catalog:read"], "status": "disabled"},
    )
    assert status == 200, changed
    assert (changed["name"], changed["scopes"], changed["status"]) == ("Reports v2", ["catalog:read"], "disabled")
    status, disabled, _ = await api.call("GET", f"{BASE}?status=disabled", token=admin)
    assert [c["id"] for c in disabled["data"]] == [client_id]
    status, active, _ = await api.call("GET", f"{BASE}?status=active", token=admin)
    assert active["data"] == []

    audit = await rows(
        api,
        "SELECT action, actor_id, object_id, details FROM audit_log WHERE object_type = 'oauth_client' ORDER BY id",
    )
    assert [(action, actor, obj) for action, actor, obj, _ in audit] == [
        ("oauth_client.registered", admin_id, client_id),
        ("oauth_client.updated", admin_id, client_id),
        ("oauth_client.disabled", admin_id, client_id),
    ]


async def test_rotating_a_secret_shows_a_new_one_that_is_never_replayed(api: Api) -> None:
    admin = await api.token_for("oc-rot@example.com", "admin")
    status, made, _ = await api.call("POST", BASE, token=admin, json=REPORTS)
    client_id = made["id"]
    headers = {"Idempotency-Key": "rotate-1"}

    status, first, _ = await api.call("POST", f"{BASE}/{client_id}/secret", token=admin, headers=headers)
    assert status == 200, first
    status, second, second_headers = await api.call("POST", f"{BASE}/{client_id}/secret", token=admin, headers=headers)
    assert status == 200, second
    # Not a replay: a secret is never stored for one, so the same key rotates again.
    assert "Idempotent-Replayed" not in second_headers
    secrets = {made["client_secret"], first["client_secret"], second["client_secret"]}
    assert len(secrets) == 3 and all(s.startswith("tbcs_") for s in secrets)
    assert await rows(api, "SELECT count(*) FROM idempotency_keys") == [(0,)]
    clients = await api.container.client_service()
    assert (await clients.authenticate(client_id, second["client_secret"])).id == client_id
    for old in (made["client_secret"], first["client_secret"]):
        with pytest.raises(InvalidClient):
            await clients.authenticate(client_id, old)

    # A registration with a key is not replayed either: each is a client of its own.
    status, again, headers_again = await api.call("POST", BASE, token=admin, json=REPORTS, headers=headers)
    assert status == 201 and again["id"] != client_id and "Idempotent-Replayed" not in headers_again


async def test_a_public_client_has_no_secret_to_rotate(api: Api) -> None:
    admin = await api.token_for("oc-pub@example.com", "admin")
    public = {**REPORTS, "type": "public", "grant_types": ["authorization_code", "refresh_token"]}
    status, made, _ = await api.call("POST", BASE, token=admin, json=public)
    assert status == 201, made
    assert "client_secret" not in made and made["secret_rotated_at"] is None
    before = await _written(api)

    status, body, _ = await api.call("POST", f"{BASE}/{made['id']}/secret", token=admin)
    assert_error(status, body, 409, "client_is_public")
    assert await _written(api) == before


async def test_staff_customers_and_strangers_are_refused_and_nothing_is_written(api: Api) -> None:
    admin = await api.token_for("oc-a@example.com", "admin")
    staff = await api.token_for("oc-s@example.com", "staff")
    customer = await api.token_for("oc-c@example.com")
    status, made, _ = await api.call("POST", BASE, token=admin, json=REPORTS)
    one = f"{BASE}/{made['id']}"
    before = await _written(api)
    calls = [
        ("GET", BASE, None),
        ("POST", BASE, REPORTS),
        ("GET", one, None),
        ("PATCH", one, {"status": "disabled"}),
        ("POST", one + "/secret", None),
    ]

    for method, path, body in calls:
        for token in (staff, customer):
            status, answer, _ = await api.call(method, path, token=token, json=body)
            assert_error(status, answer, 403, "forbidden")
        status, answer, _ = await api.call(method, path, json=body)
        assert_error(status, answer, 401, "authentication_required")
    assert await _written(api) == before


BAD_URIS = [
    ("https://app.example.com/cb#frag", "must not have a fragment (#...)"),
    ("https://*.example.com/cb", "must not have wildcards (*): it is compared exactly"),
    ("https://user:pw@app.example.com/cb", "must not have a user name or password (...@)"),
    ("http://app.example.com/cb", "must be https (http only on a loopback host: 127.0.0.1, [::1], localhost)"),
    ("javascript:alert(document.cookie)", "must be an absolute URI (https://host/path)"),
    ("/relative/cb", "must be an absolute URI (https://host/path)"),
    (
        "ftp://files.example.com/cb",
        "must be an https URI (http only on a loopback host: 127.0.0.1, [::1], localhost)",
    ),
]


@pytest.mark.parametrize(("uri", "problem"), BAD_URIS, ids=[uri for uri, _ in BAD_URIS])
async def test_bad_redirect_uris_are_refused_by_name_and_nothing_is_written(api: Api, uri: str, problem: str) -> None:
    admin = await api.token_for("oc-uri@example.com", "admin")
    status, made, _ = await api.call("POST", BASE, token=admin, json=REPORTS)
    before = await _written(api)

    status, body, _ = await api.call(
        "POST", BASE, token=admin, json={**REPORTS, "redirect_uris": ["https://ok.example.com/cb", uri]}
    )
    assert_error(status, body, 422, "validation_failed")
    assert body["error"]["details"] == {"fields": {"redirect_uris[1]": problem}}
    status, body, _ = await api.call("PATCH", f"{BASE}/{made['id']}", token=admin, json={"redirect_uris": [uri]})
    assert_error(status, body, 422, "validation_failed")
    assert body["error"]["details"] == {"fields": {"redirect_uris[0]": problem}}
    assert await _written(api) == before


async def test_bad_grants_scopes_and_bodies_are_refused_and_nothing_is_written(api: Api) -> None:
    admin = await api.token_for("oc-bad@example.com", "admin")
    status, made, _ = await api.call("POST", BASE, token=admin, json=REPORTS)
    before = await _written(api)
    public = {**REPORTS, "type": "public"}

    status, body, _ = await api.call("POST", BASE, token=admin, json=public)
    assert_error(status, body, 422, "validation_failed")
    assert body["error"]["details"] == {
        "fields": {"grant_types": "client_credentials is only for confidential clients"}
    }
    status, body, _ = await api.call(
        "POST", BASE, token=admin, json={**REPORTS, "scopes": ["orders:read", "orders:delete", "root"]}
    )
    assert_error(status, body, 422, "validation_failed")
    assert body["error"]["details"] == {"fields": {"scopes": "has unknown scopes: orders:delete, root"}}
    status, body, _ = await api.call(
        "PATCH", f"{BASE}/{made['id']}", token=admin, json={"grant_types": ["refresh_token"]}
    )
    assert_error(status, body, 422, "validation_failed")
    assert body["error"]["details"] == {"fields": {"grant_types": "refresh_token needs authorization_code"}}
    status, body, _ = await api.call(
        "POST", BASE, token=admin, json={**REPORTS, "name": "Re\u0007ports", "redirect_uris": ["https://a.example/#x"]}
    )
    assert_error(status, body, 422, "validation_failed")
    assert body["error"]["details"] == {
        "fields": {"name": "cannot contain control characters", "redirect_uris[0]": "must not have a fragment (#...)"}
    }

    # The schemas: closed objects, bounded lists and texts.
    for bad in (
        {**REPORTS, "secret_digest": "mine"},
        {**REPORTS, "status": "active"},
        {**REPORTS, "redirect_uris": [f"https://a.example/{n}" for n in range(11)]},
        {**REPORTS, "redirect_uris": []},
        {**REPORTS, "redirect_uris": ["https://a.example/" + "x" * 2000]},
        {**REPORTS, "grant_types": ["password"]},
        {**REPORTS, "grant_types": ["implicit"]},
        {**REPORTS, "type": "trusted"},
        {**REPORTS, "name": "x" * 101},
        {key: value for key, value in REPORTS.items() if key != "scopes"},
    ):
        status, body, _ = await api.call("POST", BASE, token=admin, json=bad)
        assert_error(status, body, 422, "validation_failed")
    for bad_patch in ({}, {"type": "public"}, {"client_secret": "tbcs_x"}, {"status": "deleted"}):
        status, body, _ = await api.call("PATCH", f"{BASE}/{made['id']}", token=admin, json=bad_patch)
        assert_error(status, body, 422, "validation_failed")
    assert await _written(api) == before


async def test_an_unknown_client_is_404(api: Api) -> None:
    admin = await api.token_for("oc-404@example.com", "admin")
    before = await _written(api)
    for method, path, body in (
        ("GET", f"{BASE}/cli_nobody", None),
        ("PATCH", f"{BASE}/cli_nobody", {"name": "x"}),
        ("POST", f"{BASE}/cli_nobody/secret", None),
    ):
        status, answer, _ = await api.call(method, path, token=admin, json=body)
        assert_error(status, answer, 404, "oauth_client_not_found")
        assert answer["error"]["details"] == {"client_id": "cli_nobody"}
    status, answer, _ = await api.call("GET", f"{BASE}/{'x' * 65}", token=admin)
    assert_error(status, answer, 404, "not_found")
    assert await _written(api) == before


async def test_lists_page_by_cursor(api: Api) -> None:
    admin = await api.token_for("oc-page@example.com", "admin")
    ids = []
    for n in range(3):
        status, made, _ = await api.call("POST", BASE, token=admin, json={**REPORTS, "name": f"App {n}"})
        ids.append(made["id"])

    status, first, _ = await api.call("GET", f"{BASE}?limit=2", token=admin)
    status, second, _ = await api.call("GET", f"{BASE}?limit=2&cursor={first['meta']['next_cursor']}", token=admin)
    assert [c["id"] for c in first["data"]] == ids[:2] and first["meta"]["has_more"] is True
    assert [c["id"] for c in second["data"]] == ids[2:] and second["meta"] == {"has_more": False, "next_cursor": None}
    status, body, _ = await api.call(
        "GET", f"{BASE}?limit=2&status=disabled&cursor={first['meta']['next_cursor']}", token=admin
    )
    assert_error(status, body, 400, "invalid_cursor")

"""Scopes: every operation names one, enforced in one place, documented as its security."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from core.domain.errors import InsufficientScope, Invalid
from core.domain.scopes import ROLE_SCOPES, SCOPES, format_scopes, parse_scopes
from core.domain.users import Actor, Role
from entrypoints.http.api import Api, Checks, Reply, _wrap, json_response
from entrypoints.http.keys import ACTOR
from entrypoints.http.middlewares import error_response
from entrypoints.http.openapi import build_openapi
from entrypoints.http.routes import all_operations


def test_every_operation_a_token_can_reach_names_a_known_scope() -> None:
    for op in all_operations():
        if op.auth == "none":
            assert op.scope is None, op.operation_id
        else:
            assert op.scope in SCOPES, op.operation_id


def test_reads_need_a_read_scope_and_changes_a_write_scope() -> None:
    for op in all_operations():
        if op.scope is not None:
            assert op.scope.endswith(":read") == (op.method == "GET"), op.operation_id


def test_the_document_declares_each_operations_scope_as_its_security_requirement() -> None:
    document = build_openapi(all_operations(), version="0", currency="USD")
    for op in all_operations():
        declared = document["paths"]
        doc = next(
            ops[op.method.lower()]
            for path, ops in declared.items()
            if ops.get(op.method.lower(), {}).get("operationId") == op.operation_id
        )
        if op.scope is None:
            assert doc["security"] == []
        else:
            assert {"bearer": [op.scope]} in doc["security"]
            assert "403" in doc["responses"]


def test_roles_scopes_widen_with_the_role() -> None:
    assert ROLE_SCOPES[Role.CUSTOMER] < ROLE_SCOPES[Role.STAFF] < ROLE_SCOPES[Role.ADMIN]
    assert ROLE_SCOPES[Role.ADMIN] == frozenset(SCOPES)
    assert "catalog:write" not in ROLE_SCOPES[Role.CUSTOMER]
    assert "audit:read" not in ROLE_SCOPES[Role.STAFF]


def test_scopes_parse_from_text_or_a_list_and_unknown_ones_are_refused() -> None:
    assert parse_scopes("orders:read  catalog:read") == {"orders:read", "catalog:read"}
    assert parse_scopes(["audit:read"]) == {"audit:read"}
    assert parse_scopes("") == frozenset()
    with pytest.raises(Invalid) as caught:
        parse_scopes("orders:read orders:* admin")
    assert caught.value.code == "invalid_scope"
    assert caught.value.details == {"unknown": ["admin", "orders:*"]}
    assert format_scopes({"orders:read", "catalog:read"}) == "catalog:read orders:read"


def _operation(scope: str) -> tuple[Api, object]:
    api = Api()

    @api.operation(
        "GET", "/things", summary="Things", tag="catalog", auth="optional", scope=scope, replies=[Reply(200, "ok")]
    )
    async def things(request: web.Request, i: object) -> web.Response:
        return json_response({"ok": True})

    (op,) = api.operations
    return api, _wrap(op, Checks.of(op, "USD"))


async def call(handler: object, actor: Actor) -> web.StreamResponse:
    request = make_mocked_request("GET", "/things")
    request[ACTOR] = actor
    return await handler(request)  # type: ignore[operator]


async def test_a_delegated_credential_without_the_scope_is_refused_with_rfc_6750s_header() -> None:
    _, handler = _operation("catalog:read")
    actor = Actor(user_id="usr_1", role=Role.ADMIN, scopes=frozenset({"orders:read"}))
    with pytest.raises(InsufficientScope) as caught:
        await call(handler, actor)
    response = error_response(make_mocked_request("GET", "/things"), "rid", caught.value)
    assert response.status == 403
    assert response.headers["WWW-Authenticate"] == (
        'Bearer realm="tillbox", error="insufficient_scope", scope="catalog:read"'
    )


async def test_granted_scope_first_party_session_and_anonymous_callers_pass() -> None:
    _, handler = _operation("catalog:read")
    granted = Actor(user_id="usr_1", role=Role.CUSTOMER, scopes=frozenset({"catalog:read"}))
    first_party = Actor(user_id="usr_1", role=Role.CUSTOMER)
    anonymous = Actor(user_id=None, role=Role.CUSTOMER)
    for actor in (granted, first_party, anonymous):
        assert (await call(handler, actor)).status == 200


def test_an_operation_without_a_scope_or_with_an_unknown_one_cannot_be_declared() -> None:
    api = Api()
    with pytest.raises(AssertionError):
        api.operation("GET", "/x", summary="x", tag="t", auth="user", replies=[])
    with pytest.raises(AssertionError):
        api.operation("GET", "/x", summary="x", tag="t", auth="user", scope="orders:all", replies=[])
    with pytest.raises(AssertionError):
        api.operation("GET", "/x", summary="x", tag="t", auth="none", scope="orders:read", replies=[])


def test_only_the_oauth_endpoints_keep_the_protocols_conventions_instead_of_the_documents() -> None:
    protocol = sorted(f"{op.method} {op.path}" for op in all_operations() if op.protocol)
    assert protocol == [
        "GET /oauth/authorize",
        "POST /oauth/authorize",
        "POST /oauth/introspect",
        "POST /oauth/revoke",
        "POST /oauth/token",
    ]
    assert all(not op.idempotent for op in all_operations() if op.protocol)  # tokens are never replayed

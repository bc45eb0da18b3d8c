"""The registry of OAuth clients, for admins: /api/v1/admin/oauth-clients/*."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from adapters.serialization import command, to_wire
from core.domain.pagination import PageRequest
from core.ports.repositories import OAuthClientFilter
from core.services.clients import ClientWithSecret, ListClients, RegisterClient, UpdateClient
from entrypoints.http.api import Api, Input, Param, Reply, json_response, list_response
from entrypoints.http.keys import CLIENTS
from entrypoints.http.routes.common import (
    BODY_ERRORS,
    FORBIDDEN,
    LIST_ERRORS,
    NOT_FOUND,
    PAGE,
    UNAUTHENTICATED,
)
from entrypoints.http.schemas import CLIENT_STATUS, REGISTER_CLIENT, UPDATE_CLIENT, list_of, ref

api = Api()
_BASE = "/api/v1/admin/oauth-clients"
_ONE = _BASE + "/{client_id}"


def _with_secret(made: ClientWithSecret) -> dict[str, Any]:
    wire: dict[str, Any] = to_wire(made.client)
    if made.secret is not None:
        wire["client_secret"] = made.secret
    return wire


@api.operation(
    "GET",
    _BASE,
    summary="List OAuth clients",
    tag="clients",
    auth="admin",
    scope="clients:read",
    query=(*PAGE, Param("status", CLIENT_STATUS, "Only clients with this status.")),
    replies=(
        Reply(200, "A page of clients, oldest first.", list_of("OAuthClient")),
        UNAUTHENTICATED,
        FORBIDDEN,
        *LIST_ERRORS,
    ),
)
async def list_oauth_clients(request: web.Request, i: Input) -> web.Response:
    q = i.query
    page = await request.app[CLIENTS].list_clients(
        ListClients(
            actor=i.actor,
            page=PageRequest(limit=q["limit"], after=q.get("cursor")),
            filter=command(OAuthClientFilter, {"status": q["status"]} if "status" in q else {}),
        )
    )
    return list_response(to_wire(page.items), page.next_after)


@api.operation(
    "POST",
    _BASE,
    summary="Register an OAuth client",
    tag="clients",
    auth="admin",
    scope="clients:write",
    body=REGISTER_CLIENT,
    # The answer carries the client's secret: never stored for a replay (a retry registers
    # another client, and the first one, never handed over, can be disabled).
    idempotent=False,
    replies=(
        Reply(201, "Registered; `client_secret` (confidential) is shown this once.", ref("OAuthClientWithSecret")),
        UNAUTHENTICATED,
        FORBIDDEN,
        *BODY_ERRORS,
    ),
)
async def register_oauth_client(request: web.Request, i: Input) -> web.Response:
    """An app or service that may ask for tokens. Redirect URIs are compared by exact
    string match, so each is refused unless it is one absolute URI: https (http only on
    a loopback host), no fragment, no user name, no wildcard."""
    made = await request.app[CLIENTS].register(command(RegisterClient, i.body, actor=i.actor))
    return json_response(_with_secret(made), status=201, headers={"Location": f"{_BASE}/{made.client.id}"})


@api.operation(
    "GET",
    _ONE,
    summary="One OAuth client",
    tag="clients",
    auth="admin",
    scope="clients:read",
    replies=(Reply(200, "The client.", ref("OAuthClient")), UNAUTHENTICATED, FORBIDDEN, NOT_FOUND),
)
async def get_oauth_client(request: web.Request, i: Input) -> web.Response:
    client = await request.app[CLIENTS].get_client(i.actor, request.match_info["client_id"])
    return json_response(to_wire(client))


@api.operation(
    "PATCH",
    _ONE,
    summary="Change an OAuth client, or disable or enable it",
    tag="clients",
    auth="admin",
    scope="clients:write",
    body=UPDATE_CLIENT,
    replies=(Reply(200, "The client.", ref("OAuthClient")), UNAUTHENTICATED, FORBIDDEN, NOT_FOUND, *BODY_ERRORS),
)
async def update_oauth_client(request: web.Request, i: Input) -> web.Response:
    """The fields sent replace the client's (all or none). A disabled client's secret no
    longer authenticates it. Its type never changes: register another client."""
    client = await request.app[CLIENTS].update(
        command(UpdateClient, i.body, actor=i.actor, client_id=request.match_info["client_id"])
    )
    return json_response(to_wire(client))


@api.operation(
    "POST",
    _ONE + "/secret",
    summary="Give an OAuth client a new secret",
    tag="clients",
    auth="admin",
    scope="clients:write",
    idempotent=False,  # the answer is the new secret: never stored for a replay
    replies=(
        Reply(200, "The client and its new `client_secret`, shown this once.", ref("OAuthClientWithSecret")),
        UNAUTHENTICATED,
        FORBIDDEN,
        NOT_FOUND,
        Reply(409, "The client is public: it has no secret (`client_is_public`).", ref("Error")),
    ),
)
async def rotate_oauth_client_secret(request: web.Request, i: Input) -> web.Response:
    """The old secret stops working at once: give the client the new one first."""
    made = await request.app[CLIENTS].rotate_secret(i.actor, request.match_info["client_id"])
    return json_response(_with_secret(made))

"""The caller's account and, for admins, everyone's: /api/v1/users/*."""

from __future__ import annotations

from datetime import timedelta

from aiohttp import web

from adapters.serialization import command, to_json, to_wire
from adapters.timestamps import format_timestamp
from core.domain.pagination import PageRequest
from core.ports.repositories import UserFilter
from core.services.api_keys import CreateApiKey, ListApiKeys, RevokeApiKey
from core.services.auth import ChangePassword, ListUsers, UpdateUser
from core.services.oauth import Authorization
from entrypoints.http.api import Api, Input, Param, Reply, json_response, list_response
from entrypoints.http.keys import API_KEYS, AUTH, OAUTH_SERVICE, RENDERED_PAGES, STORE
from entrypoints.http.routes.common import (
    BODY_ERRORS,
    CONFLICT,
    FORBIDDEN,
    LIST_ERRORS,
    NOT_FOUND,
    PAGE,
    THROTTLED,
    UNAUTHENTICATED,
)
from entrypoints.http.schemas import CHANGE_PASSWORD, CREATE_API_KEY, EMAIL, ROLE, STATUS, UPDATE_USER, list_of, ref

api = Api()


@api.operation(
    "GET",
    "/api/v1/users/me",
    summary="The caller's account",
    tag="users",
    auth="user",
    scope="users:read",
    replies=(Reply(200, "The account.", ref("User")), UNAUTHENTICATED),
)
async def get_me(request: web.Request, i: Input) -> web.Response:
    # Rendered once per store version: while nothing was committed, reading the account
    # again would give the same bytes (a disabled account is a commit, so it is seen).
    version = request.app[STORE].change_counter()
    key = ("me", i.actor.user_id)
    pages = request.app[RENDERED_PAGES]
    body = pages.get(key, version)
    if body is None:
        body = to_json(to_wire(await request.app[AUTH].current_user(i.actor)))
        pages.put(key, version, body)
    return web.Response(body=body, content_type="application/json")


@api.operation(
    "POST",
    "/api/v1/users/me/password",
    summary="Change the caller's password",
    tag="users",
    auth="user",
    scope="users:write",
    body=CHANGE_PASSWORD,
    replies=(
        Reply(204, "Changed; every session of the account has ended."),
        UNAUTHENTICATED,
        THROTTLED,
        *BODY_ERRORS,
    ),
)
async def change_password(request: web.Request, i: Input) -> web.Response:
    """Needs the current password. Ends every session (refresh token) of the account."""
    await request.app[AUTH].change_password(command(ChangePassword, i.body, actor=i.actor))
    return web.Response(status=204)


@api.operation(
    "GET",
    "/api/v1/users",
    summary="List accounts",
    tag="users",
    auth="admin",
    scope="users:read",
    query=(
        *PAGE,
        Param("role", ROLE, "Only accounts with this role."),
        Param("status", STATUS, "Only accounts with this status."),
        Param("email", EMAIL, "The account with this email."),
    ),
    replies=(
        Reply(200, "A page of accounts, oldest first.", list_of("User")),
        UNAUTHENTICATED,
        FORBIDDEN,
        *LIST_ERRORS,
    ),
)
async def list_users(request: web.Request, i: Input) -> web.Response:
    q = i.query
    page = await request.app[AUTH].list_users(
        ListUsers(
            actor=i.actor,
            page=PageRequest(limit=q["limit"], after=q.get("cursor")),
            # The email as typed: the service normalizes it, as at sign-in.
            filter=command(UserFilter, {name: q[name] for name in ("role", "status", "email") if name in q}),
        )
    )
    return list_response(to_wire(page.items), page.next_after)


@api.operation(
    "GET",
    "/api/v1/users/{user_id:(?!me$)[^/]+}",
    summary="One account",
    tag="users",
    auth="admin",
    scope="users:read",
    replies=(Reply(200, "The account.", ref("User")), UNAUTHENTICATED, FORBIDDEN, NOT_FOUND),
)
async def get_user(request: web.Request, i: Input) -> web.Response:
    return json_response(to_wire(await request.app[AUTH].get_user(i.actor, request.match_info["user_id"])))


@api.operation(
    "PATCH",
    "/api/v1/users/{user_id:(?!me$)[^/]+}",
    summary="Change an account's role or status",
    tag="users",
    auth="admin",
    scope="users:write",
    body=UPDATE_USER,
    replies=(Reply(200, "The account.", ref("User")), UNAUTHENTICATED, FORBIDDEN, NOT_FOUND, CONFLICT, *BODY_ERRORS),
)
async def update_user(request: web.Request, i: Input) -> web.Response:
    """Disabling an account ends its sessions. Admins cannot demote or disable themselves."""
    user = await request.app[AUTH].update_user(
        command(UpdateUser, i.body, actor=i.actor, user_id=request.match_info["user_id"])
    )
    return json_response(to_wire(user))


def _authorization(item: Authorization) -> dict[str, object]:
    consent = item.consent
    return {
        "client_id": consent.client_id,
        "client_name": item.client.name if item.client is not None else None,
        "scopes": consent.scope.split(),
        "granted_at": format_timestamp(consent.granted_at),
        "updated_at": format_timestamp(consent.updated_at),
    }


@api.operation(
    "GET",
    "/api/v1/users/me/authorizations",
    summary="The apps the caller approved (OAuth)",
    tag="users",
    auth="user",
    scope="users:read",
    replies=(Reply(200, "The approvals, by client id.", list_of("Authorization")), UNAUTHENTICATED),
)
async def list_my_authorizations(request: web.Request, i: Input) -> web.Response:
    return list_response(
        [_authorization(a) for a in await request.app[OAUTH_SERVICE].list_authorizations(i.actor)], None
    )


@api.operation(
    "DELETE",
    "/api/v1/users/me/authorizations/{client_id}",
    summary="Take an approval back: the app's sessions end at once",
    tag="users",
    auth="user",
    scope="users:write",
    replies=(Reply(204, "Taken back; the app's tokens are refused from now on."), UNAUTHENTICATED, NOT_FOUND),
)
async def revoke_my_authorization(request: web.Request, i: Input) -> web.Response:
    await request.app[OAUTH_SERVICE].revoke_authorization(i.actor, request.match_info["client_id"])
    return web.Response(status=204)


@api.operation(
    "GET",
    "/api/v1/users/{user_id:(?!me$)[^/]+}/authorizations",
    summary="The apps a user approved (OAuth)",
    tag="users",
    auth="admin",
    scope="users:read",
    replies=(Reply(200, "The approvals, by client id.", list_of("Authorization")), UNAUTHENTICATED, FORBIDDEN),
)
async def list_user_authorizations(request: web.Request, i: Input) -> web.Response:
    items = await request.app[OAUTH_SERVICE].list_authorizations(i.actor, request.match_info["user_id"])
    return list_response([_authorization(a) for a in items], None)


@api.operation(
    "DELETE",
    "/api/v1/users/{user_id:(?!me$)[^/]+}/authorizations/{client_id}",
    summary="Take a user's approval of an app back: its sessions for the user end at once",
    tag="users",
    auth="admin",
    scope="users:write",
    replies=(Reply(204, "Taken back."), UNAUTHENTICATED, FORBIDDEN, NOT_FOUND),
)
async def revoke_user_authorization(request: web.Request, i: Input) -> web.Response:
    await request.app[OAUTH_SERVICE].revoke_authorization(
        i.actor, request.match_info["client_id"], request.match_info["user_id"]
    )
    return web.Response(status=204)


# Personal API keys. Creating one is for admins (the service checks the account as it is
# now); listing and revoking are for any signed-in user, so that an admin demoted since still
# sees, and can revoke, the keys they made (which now do only what the new role allows).
@api.operation(
    "POST",
    "/api/v1/users/me/api-keys",
    summary="Create a personal API key",
    tag="users",
    auth="admin",
    scope="users:write",
    body=CREATE_API_KEY,
    replies=(
        Reply(201, "The key, with its secret: shown this once.", ref("ApiKeyCreated")),
        UNAUTHENTICATED,
        FORBIDDEN,
        *BODY_ERRORS,
    ),
    idempotent=False,  # the answer carries the secret: never stored, so never replayed
)
async def create_api_key(request: web.Request, i: Input) -> web.Response:
    """For a script: send the secret as `Authorization: Bearer tbk_…`. Admins only, with a
    subset of their own scopes, from a signed-in session (not with an API key or another
    delegated credential: 403 `forbidden`). The key does no more than its scopes and its
    owner's role as it is at each request allow; it expires after `expires_in_days`."""
    b = i.body
    new = await request.app[API_KEYS].create(
        CreateApiKey(
            actor=i.actor, name=b["name"], scopes=tuple(b["scopes"]), expires_in=timedelta(days=b["expires_in_days"])
        )
    )
    return json_response({**to_wire(new.key), "secret": new.secret}, status=201, headers={"Cache-Control": "no-store"})


@api.operation(
    "GET",
    "/api/v1/users/me/api-keys",
    summary="List the caller's API keys",
    tag="users",
    auth="user",
    scope="users:read",
    query=PAGE,
    replies=(
        Reply(200, "A page of keys, newest first, each with its last use.", list_of("ApiKey")),
        UNAUTHENTICATED,
        FORBIDDEN,
        *LIST_ERRORS,
    ),
)
async def list_api_keys(request: web.Request, i: Input) -> web.Response:
    """Revoked and expired keys too (`revoked_at`, `expires_at`); never a secret. Not with an
    API key or another delegated credential (403 `forbidden`)."""
    q = i.query
    page = await request.app[API_KEYS].list(
        ListApiKeys(actor=i.actor, page=PageRequest(limit=q["limit"], after=q.get("cursor")))
    )
    return list_response(to_wire(page.items), page.next_after)


@api.operation(
    "DELETE",
    "/api/v1/users/me/api-keys/{key_id}",
    summary="Revoke an API key",
    tag="users",
    auth="user",
    scope="users:write",
    replies=(Reply(200, "The revoked key.", ref("ApiKey")), UNAUTHENTICATED, NOT_FOUND),
)
async def revoke_api_key(request: web.Request, i: Input) -> web.Response:
    """The key is refused from the next request on. Your own keys; an admin may revoke
    anyone's. Revoking a revoked key answers it again, unchanged."""
    key = await request.app[API_KEYS].revoke(RevokeApiKey(actor=i.actor, key_id=request.match_info["key_id"]))
    return json_response(to_wire(key))

"""Registration and sessions: /api/v1/auth/*."""

from __future__ import annotations

from aiohttp import web

from adapters.serialization import command, to_wire
from core.services.auth import LogIn, LogOut, RefreshSession, RegisterUser, TokenPair
from entrypoints.http.api import Api, Input, Reply, json_response
from entrypoints.http.keys import AUTH, CLIENT_ADDRESS
from entrypoints.http.routes.common import BODY_ERRORS, CONFLICT, FORBIDDEN, THROTTLED, UNAUTHENTICATED
from entrypoints.http.schemas import CREDENTIALS, REFRESH, REGISTER, ref

api = Api()


def _tokens(pair: TokenPair) -> web.Response:
    return json_response(
        {
            "access_token": pair.access_token,
            "token_type": "Bearer",
            "expires_in": pair.expires_in,
            "refresh_token": pair.refresh_token,
        }
    )


@api.operation(
    "POST",
    "/api/v1/auth/register",
    summary="Create a customer account",
    tag="auth",
    auth="none",
    body=REGISTER,
    replies=(Reply(201, "The new account.", ref("User")), FORBIDDEN, CONFLICT, THROTTLED, *BODY_ERRORS),
)
async def register(request: web.Request, i: Input) -> web.Response:
    """Self-registration, when the store allows it. Passwords: 12 to 128 characters, not a common one."""
    user = await request.app[AUTH].register(command(RegisterUser, i.body, source_ip=request[CLIENT_ADDRESS]))
    return json_response(to_wire(user), status=201)


@api.operation(
    "POST",
    "/api/v1/auth/login",
    summary="Log in with email and password",
    tag="auth",
    auth="none",
    body=CREDENTIALS,
    idempotent=False,  # the answer is a new session's secrets: never stored; a retry logs in again
    replies=(Reply(200, "A new session.", ref("Tokens")), UNAUTHENTICATED, FORBIDDEN, THROTTLED, *BODY_ERRORS),
)
async def login(request: web.Request, i: Input) -> web.Response:
    """Returns a 15-minute access token and a single-use refresh token. After 5 failed
    logins for an account, or 20 from one address, within 15 minutes: 429 with Retry-After."""
    pair = await request.app[AUTH].login(command(LogIn, i.body, source_ip=request[CLIENT_ADDRESS]))
    return _tokens(pair)


@api.operation(
    "POST",
    "/api/v1/auth/refresh",
    summary="Exchange a refresh token for new tokens",
    tag="auth",
    auth="none",
    body=REFRESH,
    idempotent=False,  # the answer carries secrets: never stored (a replayed refresh token is refused anyway)
    replies=(Reply(200, "New tokens; the old refresh token is spent.", ref("Tokens")), UNAUTHENTICATED, *BODY_ERRORS),
)
async def refresh(request: web.Request, i: Input) -> web.Response:
    """Each refresh token works once. Presenting a spent one again revokes its whole session."""
    pair = await request.app[AUTH].refresh(command(RefreshSession, i.body, source_ip=request[CLIENT_ADDRESS]))
    return _tokens(pair)


@api.operation(
    "POST",
    "/api/v1/auth/logout",
    summary="End a session",
    tag="auth",
    auth="none",
    body=REFRESH,
    replies=(Reply(204, "The session is over (also when it already was)."), *BODY_ERRORS),
)
async def logout(request: web.Request, i: Input) -> web.Response:
    """Revokes the refresh token and every token of its session."""
    await request.app[AUTH].logout(command(LogOut, i.body))
    return web.Response(status=204)

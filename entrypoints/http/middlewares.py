"""Request id, error envelope and authentication: every response passes through here."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from core.domain import errors
from core.domain.users import Actor, Role
from entrypoints.http.connections import BodyTimeout
from entrypoints.http.envelope import HTTP_CODES, SECURITY_HEADERS, envelope, new_request_id
from entrypoints.http.keys import ACTOR, AUTH, CLIENT_ADDRESS, REQUEST_ID
from entrypoints.http.proxies import TrustedProxies
from entrypoints.logs import AccessLog

log = logging.getLogger("tillbox.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

_SECURITY_HEADERS = CIMultiDict(SECURITY_HEADERS)
# For a response that says how it may be cached (a public catalog read): all but Cache-Control.
_SECURITY_HEADERS_CACHEABLE = CIMultiDict((k, v) for k, v in SECURITY_HEADERS.items() if k != "Cache-Control")


class HttpError(Exception):
    """An error that only exists in HTTP (bad JSON, wrong media type): status and code."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}


_KIND_STATUS: list[tuple[type[errors.DomainError], int]] = [
    (errors.Malformed, 400),
    (errors.Invalid, 422),
    (errors.Unauthenticated, 401),
    (errors.NotAllowed, 403),
    (errors.NotFound, 404),
    (errors.PreconditionFailed, 412),
    (errors.Conflict, 409),
    (errors.PaymentFailed, 402),
    (errors.TooManyRequests, 429),
    (errors.Unavailable, 503),
]

#: What the access log records for a request whose client hung up before it was read
#: (nginx's "client closed request"); the client never sees it.
CLIENT_CLOSED_REQUEST = 499


def status_of(error: errors.DomainError) -> int:
    for kind, status in _KIND_STATUS:
        if isinstance(error, kind):
            return status
    return 400


def request_middleware(access_log: AccessLog | None, proxies: TrustedProxies | None = None) -> Any:
    """The one middleware every request passes through. One function rather than a chain
    of three because each layer of aiohttp middleware costs a coroutine per request, and
    on a small read these layers were a measurable part of the whole (bench/run.py).
    It is also the one place that decides the client's address (behind ``proxies``)."""
    trusted = proxies if proxies else None  # none trusted: the forwarding headers are not even read

    @web.middleware
    async def request_pipeline(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        # 1. Request id: accepted from the client if it is sane, made otherwise.
        incoming = request.headers.get("X-Request-ID")
        rid = incoming if incoming is not None and _REQUEST_ID.match(incoming) else new_request_id()
        request[REQUEST_ID] = rid
        client = request.remote if trusted is None else trusted.client_address(request)
        request[CLIENT_ADDRESS] = client
        try:
            # 2. Authentication: a Bearer token becomes the actor; no token is an anonymous
            # customer; a token that is present but invalid is refused even where none is needed.
            header = request.headers.get("Authorization")
            if header is None or request.path.startswith(OAUTH_PREFIX):
                # The OAuth endpoints authenticate clients themselves (RFC 6749 §2.3: Basic).
                request[ACTOR] = Actor(user_id=None, role=Role.CUSTOMER, source_ip=client)
            else:
                scheme, _, token = header.partition(" ")
                if scheme.lower() != "bearer" or not token.strip():
                    raise errors.TokenInvalid("Use Authorization: Bearer <access token>.")
                request[ACTOR] = await request.app[AUTH].authenticate(token.strip(), client)
            response = await handler(request)
        except web.HTTPException as error:
            if error.status < 400:
                raise  # a redirect is an answer, not an error
            response = error_response(request, rid, error)
        except Exception as error:
            # 3. The error envelope: every error, whatever raised it, leaves in one shape.
            response = error_response(request, rid, error)
        headers = response.headers
        headers["X-Request-ID"] = rid
        if "Content-Security-Policy" in headers:  # a page that sets its own (/docs)
            for name, value in SECURITY_HEADERS.items():
                if name not in headers:
                    headers[name] = value
        elif "Cache-Control" in headers:
            headers.extend(_SECURITY_HEADERS_CACHEABLE)
        else:
            headers.extend(_SECURITY_HEADERS)
        if access_log is not None:
            ms = (time.perf_counter() - started) * 1000
            access_log.write(time.time(), rid, client, request.method, request.path, response.status, ms)
        return response

    return request_pipeline


#: The authorization server's endpoints (entrypoints/http/routes/oauth.py).
OAUTH_PREFIX = "/oauth/"


def error_response(request: web.Request, rid: str, error: Exception) -> web.Response:
    if isinstance(error, errors.DomainError):
        status = status_of(error)
        response = envelope(rid, status, error.code, error.message, error.details)
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="tillbox"'
        elif isinstance(error, errors.InsufficientScope):  # RFC 6750 §3
            response.headers["WWW-Authenticate"] = (
                f'Bearer realm="tillbox", error="insufficient_scope", scope="{error.scope}"'
            )
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            response.headers["Retry-After"] = str(retry_after)
        return response
    if isinstance(error, HttpError):
        return envelope(rid, error.status, error.code, error.message, error.details)
    if isinstance(error, BodyTimeout):
        response = envelope(rid, 408, "request_timeout", error.message)
        response.force_close()
        return response
    if isinstance(error, (ConnectionError, web.RequestPayloadError)):
        transport = request.transport
        if transport is None or transport.is_closing():
            # The client hung up while its request was being read: nothing was done, and
            # nobody is left to answer. Not a fault of ours, so no traceback.
            log.debug("client hung up", extra={"fields": {"request_id": rid, "path": request.path}})
            return web.Response(status=CLIENT_CLOSED_REQUEST)
        if isinstance(error, web.RequestPayloadError):
            # The client is still there and sent a body that cannot be decoded (a broken
            # chunk, a bad Content-Encoding): nothing after it on this connection can be.
            message = "The request body could not be read: it is not what its headers say."
            response = envelope(rid, 400, "malformed_body", message)
            response.force_close()
            return response
    if isinstance(error, web.HTTPException) and error.status >= 400:
        code = HTTP_CODES.get(error.status, "http_error")
        message = {
            404: "There is nothing at this address.",
            405: f"{request.method} is not allowed here.",
            413: "The request body is too large.",
        }.get(error.status, error.reason)
        response = envelope(rid, error.status, code, message)
        if error.status == 405 and "Allow" in error.headers:
            response.headers["Allow"] = error.headers["Allow"]
        return response
    log.exception("unhandled error", exc_info=error, extra={"fields": {"request_id": rid, "path": request.path}})
    return envelope(rid, 500, "internal_error", "Something went wrong on our side; the request id says where.")


def cors_middleware(allowed_origins: list[str]) -> Any:
    allowed = frozenset(allowed_origins)

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Answer preflights and add CORS headers for the configured origins only."""
        origin = request.headers.get("Origin")
        if origin is None or origin not in allowed:
            answer = await handler(request)
            # Whatever this request's Origin, the answer to another could differ: a shared cache
            # must not give this copy (without Access-Control-Allow-Origin) to an allowed origin.
            _vary_by_origin(answer)
            return answer
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response: web.StreamResponse = web.Response(status=204)
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, PATCH, DELETE"
            response.headers["Access-Control-Allow-Headers"] = (
                "Authorization, Content-Type, If-Match, If-None-Match, Idempotency-Key, X-Request-ID"
            )
            response.headers["Access-Control-Max-Age"] = "600"
        else:
            response = await handler(request)
            response.headers["Access-Control-Expose-Headers"] = "ETag, X-Request-ID, Retry-After, Idempotent-Replayed"
        response.headers["Access-Control-Allow-Origin"] = origin
        _vary_by_origin(response)
        return response

    return cors


def _vary_by_origin(response: web.StreamResponse) -> None:
    vary = response.headers.get("Vary")  # a catalog read varies by Authorization too
    response.headers["Vary"] = f"{vary}, Origin" if vary else "Origin"

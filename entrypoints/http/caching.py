"""HTTP caching of catalog reads: an entity tag on every answer, a 304 when the client's
copy is current, and for anonymous callers a short public max-age (RFC 9110 13.1.2,
RFC 9111). Anything read with a token stays ``no-store``: what a staff member sees (or a
customer, later) is not for a shared cache."""

from __future__ import annotations

import re

from aiohttp import web

from core.domain.users import Actor

_OPAQUE_TAG = re.compile(r'(?:W/)?("[^"]*")')


def none_match(header: str | None, etag: str) -> bool:
    """Whether If-None-Match names the representation tagged ``etag``: ``*``, or any tag of
    the list, compared weakly (``W/"x"`` matches ``"x"``), as RFC 9110 asks for GET."""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    current = etag.removeprefix("W/")
    return current in _OPAQUE_TAG.findall(header)


def cacheable(request: web.Request, actor: Actor, body: bytes, etag: str, public_max_age: int) -> web.Response:
    """``body`` (JSON) tagged ``etag``, or 304 without it when the client has it already."""
    if none_match(request.headers.get("If-None-Match"), etag):
        response = web.Response(status=304)
    else:
        response = web.Response(body=body, content_type="application/json")
    # Headers set one by one: a dict given to the constructor costs ~3 us more (the hot path).
    headers = response.headers
    headers["ETag"] = etag
    if actor.user_id is None:
        headers["Cache-Control"] = f"public, max-age={public_max_age}" if public_max_age else "public, no-cache"
        # A cache must not answer a request with a token from this copy.
        headers["Vary"] = "Authorization"
    # Else the security headers make it no-store: nothing keeps it, so nothing varies.
    return response

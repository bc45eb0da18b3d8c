"""The error envelope of PRODUCT.md, the headers every response carries, and request ids:
shared by the request middleware and the protocol, which answers what never reaches the
application (a request aiohttp cannot parse, or one over the header limits)."""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from adapters.timestamps import format_timestamp

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}
DOCS_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
#: What every response says in ``Server``: aiohttp's default names its version and Python's.
SERVER = "tillbox"

HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    411: "length_required",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    417: "expectation_failed",
    431: "headers_too_large",
    501: "not_implemented",
}

# Made request ids: a random prefix per process and a counter. Unique (across processes
# and restarts, by the prefix), sortable within a process, and no system call per request.
_ID_PREFIX = os.urandom(6).hex()
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):010x}"


def envelope(
    request_id: str, status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> web.Response:
    body = {
        "error": {
            "code": code,
            "message": message,
            "request_id": request_id,
            "timestamp": format_timestamp(datetime.now(UTC)),
            "details": details or {},
        }
    }
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")

"""The OpenAPI 3.1 document, built from the same declarations that validate requests."""

from __future__ import annotations

import re
from typing import Any, cast

from entrypoints.http.api import Operation
from entrypoints.http.schemas import COMPONENTS, ref, specialize

ERROR = ref("Error")

_PATH_PARAM = re.compile(r"{(\w+)}")
_ROUTE_PATTERN = re.compile(r"{(\w+):[^}]*}")


def documented_path(route_path: str) -> str:
    """The OpenAPI form of an aiohttp path: ``{user_id:(?!me$)[^/]+}`` becomes ``{user_id}``."""
    return _ROUTE_PATTERN.sub(r"{\1}", route_path)


TAGS = [
    {"name": "auth", "description": "Accounts and sessions: register, log in, refresh, log out."},
    {"name": "users", "description": "The caller's account; for admins, every account."},
    {"name": "catalog", "description": "Products, prices and stock."},
    {"name": "orders", "description": "Orders: stock reserved at once, expired when unpaid, cancelled or fulfilled."},
    {"name": "payments", "description": "Card payments through Stripe, manual payments, refunds."},
    {"name": "webhooks", "description": "Signed notifications from payment providers."},
    {"name": "admin", "description": "The audit log."},
    {"name": "operations", "description": "Health, readiness and this description."},
]

_CONVENTIONS = """\
Tillbox is a self-hosted commerce backend. Conventions of every operation:

* JSON bodies, `snake_case` fields, opaque string ids.
* Amounts are integers in minor units (cents) beside a `currency` (ISO 4217), never fractions:
  `1299` is $12.99; `12.99` is refused.
* Errors always have one shape (`Error`): a stable `code`, a `message`, the `request_id`,
  a `timestamp` and `details` (for validation errors, `details.fields` names each bad field).
* Lists return `{"data": [...], "meta": {"has_more", "next_cursor"}}`; pass `cursor` to get the next page;
  `limit` is 1-100 (default 20). Cursors are opaque: pass `next_cursor` back as received, with the same
  sort and filters; anything else is 400 `invalid_cursor`.
* Authenticate with `Authorization: Bearer <access token>` from `POST /api/v1/auth/login`.
* Resources carry an `ETag`; send it in `If-Match` to update only what you read (412 otherwise).
* Every response carries `X-Request-ID` (yours if you sent one).
"""


def _operation(op: Operation) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
    }
    if op.description:
        doc["description"] = op.description
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1, "maxLength": 64}}
        for name in _PATH_PARAM.findall(documented_path(op.path))
    ]
    params += [
        {"name": p.name, "in": "query", "required": p.required, "schema": p.schema, "description": p.description}
        for p in op.query
    ]
    params += [
        {"name": p.name, "in": "header", "required": p.required, "schema": p.schema, "description": p.description}
        for p in op.headers
    ]
    if op.idempotent:
        params.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "pattern": "^[!-~]{1,255}$"},
                "description": "Repeat the request safely: the same key with the same body replays the first "
                "response (with `Idempotent-Replayed: true`), with another body is refused (422 "
                "`idempotency_key_reused`), and while the first is running gets 409. Keys live 24 hours, "
                "per caller.",
            }
        )
    if params:
        doc["parameters"] = params
    if op.body is not None:
        doc["requestBody"] = {"required": True, "content": {"application/json": {"schema": op.body}}}
    responses: dict[str, Any] = {}
    for reply in op.replies:
        entry: dict[str, Any] = {"description": reply.description}
        if reply.schema is not None:
            media = "text/html" if op.path == "/docs" else "application/json"
            entry["content"] = {media: {"schema": reply.schema}}
        if reply.headers:
            entry["headers"] = {h: {"schema": {"type": "string"}} for h in reply.headers}
        responses[str(reply.status)] = entry
    if op.path == "/docs":
        responses["200"]["content"] = {"text/html": {"schema": {"type": "string"}}}
    if op.idempotent:
        for status, text in (
            ("409", "A request with this Idempotency-Key is still running."),
            ("422", "The Idempotency-Key was used for another request, or is malformed."),
        ):
            responses.setdefault(status, {"description": text, "content": {"application/json": {"schema": ERROR}}})
    doc["responses"] = responses
    if op.auth in ("user", "staff", "admin"):
        doc["security"] = [{"bearer": []}]
        if op.auth != "user":
            doc["description"] = (doc.get("description", "") + f"\n\nRequires the `{op.auth}` role.").strip()
    elif op.auth == "optional":
        doc["security"] = [{"bearer": []}, {}]
    else:
        doc["security"] = []
    return doc


def build_openapi(
    operations: list[Operation], *, version: str, currency: str, server_url: str | None = None
) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        if op.public:
            paths.setdefault(documented_path(op.path), {})[op.method.lower()] = _operation(op)
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Tillbox API",
            "version": version,
            "description": _CONVENTIONS,
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "tags": TAGS,
        "paths": paths,
        "components": {
            "schemas": COMPONENTS,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "An access token from POST /api/v1/auth/login (15 minutes).",
                }
            },
        },
    }
    if server_url:
        document["servers"] = [{"url": server_url}]
    return cast(dict[str, Any], specialize(document, currency))

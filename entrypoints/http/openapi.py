"""The OpenAPI 3.1 document, built from the same declarations that validate requests."""

from __future__ import annotations

import re
from typing import Any, cast

from core.domain.scopes import SCOPES
from entrypoints.http.api import Operation, accepts_empty_body, path_parameters, path_schema
from entrypoints.http.examples import Examples
from entrypoints.http.schemas import COMPONENTS, ORDER_ID, ref, specialize

ERROR = ref("Error")

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
    {
        "name": "oauth",
        "description": "The OAuth 2 authorization server for other software: authorization code with PKCE "
        "(S256), refresh tokens rotated on every use, revocation, introspection, metadata.",
    },
    {"name": "clients", "description": "The OAuth clients (apps and services) registered to ask for tokens."},
    {"name": "operations", "description": "Health, readiness and this description."},
]

_CONVENTIONS = """\
Tillbox is a self-hosted commerce backend: accounts, a product catalog, orders and payments.
Every operation below follows these conventions.

### Requests and responses

The conventions below hold for every operation but the OAuth 2 authorization server's
(`/oauth/…`, tag `oauth`), which speak OAuth 2 as RFC 6749 says: form-encoded parameters,
unknown parameters ignored, errors as `{"error", "error_description"}`.

* JSON bodies (`Content-Type: application/json`) with `snake_case` fields. Ids are opaque
  strings (`prd_…`, `ord_…`): store them, never parse them.
* Request bodies are closed: a field the operation does not define is refused (422), so a
  misspelt field never passes silently; so is a query parameter the operation does not take.
* Every `GET` also answers `HEAD`. A `POST` sent without a body is read as `{}`: one whose
  body is optional (cancel, fulfil) needs none, one that needs fields answers 422 naming them.
* Times are RFC 3339 strings in UTC: `2026-05-04T09:30:00.000000Z`.
* Every response carries `X-Request-ID` (yours, if you sent a sane one): quote it when
  reporting a problem, the server's log has the same id.

### Money

Amounts are integers in minor units (cents) of the store's one currency, always beside a
`currency` field (ISO 4217), never fractions: `1299` in `USD` is $12.99, and `12.99` is refused.

### Authentication

Log in with `POST /api/v1/auth/login` and send `Authorization: Bearer <access_token>`. An access
token lasts 15 minutes; `POST /api/v1/auth/refresh` exchanges the single-use refresh token for
new ones. Each operation says what it needs:

| level | who may call |
|---|---|
| none | anyone, without a token |
| optional | anyone; with a staff token, more is shown (inactive products) |
| user | any signed-in account; customers see only their own orders |
| staff | staff and admins |
| admin | admins only |

A token that is sent but is invalid or expired is refused (401), even where none is needed.

Each operation also names one *scope* (`catalog:read`, `orders:write`, …; its security
requirement in this document). A credential delegated to other software carries only the
scopes it was granted, and one used beyond them is refused (403 `insufficient_scope`, with
`WWW-Authenticate: Bearer error="insufficient_scope", scope="…"`). A first-party session carries
its role's full set. Scopes only narrow: the role is always checked as well.

A script can send a *personal API key* (`Authorization: Bearer tbk_…`) instead of an access
token. An admin signed in with a password makes one (`POST /api/v1/users/me/api-keys`) with
some of their scopes and an expiry; its secret is in that answer only. A key does what both
its scopes and its owner's role at each request allow, and a revoked or expired key, or one
whose owner is disabled, is refused (401 `invalid_token`) from the next request on.

### Lists and cursors

Lists answer `{"data": [...], "meta": {"has_more", "next_cursor"}}`; `limit` is 1-100 (default 20).
For the next page, send `meta.next_cursor` back unchanged as `cursor`, with the same sort and
filters; `has_more: false` (and `next_cursor: null`) is the last page. Cursors are opaque, and
the order is stable; a cursor that is not one of this list's is refused (400 `invalid_cursor`).

### Idempotency keys

An operation that lists the `Idempotency-Key` header can be retried safely: send a new key (a
UUID, for example; 1-255 printable ASCII characters) with each request and the same key again
when you retry it after a timeout. The same key with the same body answers the first response
again, with `Idempotent-Replayed: true`; with another body it is refused (422
`idempotency_key_reused`); while the first is still running, 409. Keys are per caller and live
24 hours.

### ETags and If-Match

A product comes with an `ETag` (`"v3"`). Send it back in `If-Match` when you change it: if
someone changed it since you read it, the answer is 412 `version_mismatch` and nothing changes.
`If-Match: *`, or none, changes whatever version is current. Catalog reads answer 304 to an
`If-None-Match` naming the current tag; without a token they may be cached publicly for a
few seconds (`Cache-Control`, `Vary: Authorization`).

### Errors

Every error has the one shape of the `Error` schema, with the HTTP status that fits:

| status | means | `code`, for example |
|---|---|---|
| 400 | the body is not JSON, or a cursor is not this list's | `malformed_json`, `invalid_cursor` |
| 401 | no valid token | `authentication_required`, `invalid_token`, `session_ended`, `invalid_credentials` |
| 402 | the card was declined | `payment_failed` |
| 403 | your role or your token's scopes do not allow it | `forbidden`, `insufficient_scope`, `account_disabled`, … |
| 404 | no such object, or not yours | `order_not_found`, `product_not_found` |
| 409 | conflicts with the state | `insufficient_stock`, `email_taken`, `invalid_order_state`, `last_admin` |
| 412 | `If-Match` names an older version | `version_mismatch` |
| 413, 415 | body too large, not JSON | `payload_too_large`, `unsupported_media_type` |
| 422 | a field is missing or wrong | `validation_failed` (`details.fields`, 20 at most: see `truncated`) |
| 429 | too many attempts, or busy | `too_many_login_attempts`, `too_many_registrations`, `server_busy` |
| 503 | a provider cannot be reached, a read took too long | `payment_provider_unavailable`, `query_timeout` |

`code` is stable: branch on it, not on `message`, which is for humans and may change.
"""

_HEADERS: dict[str, dict[str, Any]] = {
    "ETag": {"type": "string", "description": "The version, for `If-Match`.", "examples": ['"v1"']},
    "Location": {
        "type": "string",
        "description": "Where the object is.",
        "examples": ["/api/v1/orders/" + ORDER_ID["examples"][0]],
    },
    "Retry-After": {"type": "string", "description": "Seconds.", "examples": ["30"]},
}


def _operation(op: Operation) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
    }
    if op.description:
        doc["description"] = op.description
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": path_schema(name)} for name in path_parameters(op.path)
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
                "schema": {
                    "type": "string",
                    "maxLength": 255,
                    "pattern": "^[!-~]{1,255}$",
                    "examples": ["9b2f6a7e-4c1d-4e8a-b3f5-0d6c2a1e7f94"],
                },
                "description": "Repeat the request safely: the same key with the same body replays the first "
                "response (with `Idempotent-Replayed: true`), with another body is refused (422 "
                "`idempotency_key_reused`), and while the first is running gets 409. Keys live 24 hours, "
                "per caller.",
            }
        )
    if params:
        doc["parameters"] = params
    if op.body is not None:
        doc["requestBody"] = {
            # An action that needs nothing sent takes no body at all (as `{}`).
            "required": not accepts_empty_body(op),
            "content": {"application/json": {"schema": op.body}},
        }
    responses: dict[str, Any] = {}
    for reply in op.replies:
        entry: dict[str, Any] = {"description": reply.description}
        if reply.schema is not None:
            entry["content"] = {reply.media_type: {"schema": reply.schema}}
        if reply.headers:
            entry["headers"] = {h: {"schema": _HEADERS.get(h, {"type": "string"})} for h in reply.headers}
        responses[str(reply.status)] = entry
    if op.idempotent:
        for status, text in (
            ("409", "A request with this Idempotency-Key is still running."),
            ("422", "The Idempotency-Key was used for another request, or is malformed."),
        ):
            responses.setdefault(status, {"description": text, "content": {"application/json": {"schema": ERROR}}})
    # Any operation refuses an unknown query parameter (or a malformed declared one).
    responses.setdefault(
        "422",
        {
            "description": "A query parameter is unknown or wrong; `details.fields` says which.",
            "content": {"application/json": {"schema": ERROR}},
        },
    )
    doc["responses"] = responses
    doc["x-tillbox-auth"] = op.auth  # none, optional, user, staff or admin: what /docs shows
    if op.protocol:
        # Its parameters and errors are OAuth 2's (RFC 6749), not this document's conventions.
        doc["x-tillbox-protocol"] = "oauth2"
    # The scope a delegated credential needs, as the security requirement's list (OpenAPI 3.1
    # allows it for any scheme); first-party tokens carry their role's full set.
    scopes = [op.scope] if op.scope is not None else []
    if op.auth in ("user", "staff", "admin"):
        doc["security"] = [{"bearer": scopes}, {"oauth2": scopes}]
        if op.auth != "user":
            doc["description"] = (doc.get("description", "") + f"\n\nRequires the `{op.auth}` role.").strip()
    elif op.auth == "optional":
        doc["security"] = [{"bearer": scopes}, {"oauth2": scopes}, {}]
    else:
        doc["security"] = []
    if op.scope is not None:
        doc["x-tillbox-scope"] = op.scope
        responses.setdefault(
            "403",
            {
                "description": f"Not granted `{op.scope}` (`insufficient_scope`), or the role may not.",
                "content": {"application/json": {"schema": ERROR}},
            },
        )
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
                },
                "oauth2": {
                    "type": "oauth2",
                    "description": "An app's access token, from Tillbox's authorization server: only the scopes "
                    "the user approved, never more than the user's role allows.",
                    "flows": {
                        "authorizationCode": {
                            "authorizationUrl": "/oauth/authorize",
                            "tokenUrl": "/oauth/token",
                            "refreshUrl": "/oauth/token",
                            "scopes": dict(SCOPES),
                        }
                    },
                },
            },
        },
    }
    if server_url:
        document["servers"] = [{"url": server_url}]
    document = cast(dict[str, Any], specialize(document, currency))
    _add_examples(document)
    return document


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def _add_examples(document: dict[str, Any]) -> None:
    """An example beside each request body and each successful JSON response, made from
    the (specialized) schema it stands beside."""
    examples = Examples(document["components"]["schemas"])
    for ops in document["paths"].values():
        for op in ops.values():
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None:
                forms = examples.forms(body["schema"])
                if list(forms) == ["default"]:
                    body["example"] = forms["default"]
                else:
                    body["examples"] = {
                        _slug(title): {"summary": title, "value": value} for title, value in forms.items()
                    }
            for status, reply in op["responses"].items():
                if not status.startswith("2"):
                    continue  # one shape, the Error schema's, with its own example
                for media in reply.get("content", {}).values():
                    media["example"] = examples.value(media["schema"])

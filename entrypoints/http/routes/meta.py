"""Health, readiness and the API's own description: /healthz, /readyz, the OpenAPI document, /docs."""

from __future__ import annotations

import logging

from aiohttp import web

from entrypoints.http.api import Api, Input, Param, Reply, json_response
from entrypoints.http.docs import MAX_QUERY_LENGTH
from entrypoints.http.envelope import DOCS_CSP
from entrypoints.http.keys import DOCS, OPENAPI, READY_CHECKS, SIGNING_KEYS
from entrypoints.http.routes.common import INVALID
from entrypoints.http.schemas import ref

api = Api()
log = logging.getLogger("tillbox.http")


@api.operation(
    "GET",
    "/healthz",
    summary="Is the process alive",
    tag="operations",
    auth="none",
    replies=(Reply(200, "Alive.", ref("Health")),),
)
async def healthz(request: web.Request, i: Input) -> web.Response:
    return json_response({"status": "ok"})


@api.operation(
    "GET",
    "/readyz",
    summary="Can it serve: database, migrations, disk",
    tag="operations",
    auth="none",
    replies=(Reply(200, "Ready.", ref("Health")), Reply(503, "Not ready; `checks` says why.", ref("Health"))),
)
async def readyz(request: web.Request, i: Input) -> web.Response:
    checks: dict[str, object] = {}
    ready = True
    for name, check in request.app[READY_CHECKS]:
        try:
            checks.update(check())
        except Exception as e:  # a failed check is the answer, not an error
            checks[name] = f"failed: {e}"
            ready = False
            log.warning("readiness check failed", extra={"fields": {"check": name, "error": str(e)}})
    return json_response({"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)


@api.operation(
    "GET",
    "/api/v1/openapi.json",
    summary="This document (OpenAPI 3.1)",
    tag="operations",
    auth="none",
    replies=(
        Reply(
            200,
            "The OpenAPI document.",
            {"type": "object", "examples": [{"openapi": "3.1.0", "info": {"title": "Tillbox API"}, "paths": {}}]},
        ),
    ),
)
async def openapi_document(request: web.Request, i: Input) -> web.Response:
    return json_response(request.app[OPENAPI])


@api.operation(
    "GET",
    "/docs",
    summary="Readable API reference (HTML, works offline)",
    tag="operations",
    auth="none",
    query=(
        Param(
            "q",
            {"type": "string", "maxLength": MAX_QUERY_LENGTH, "examples": ["refund"]},
            "Show only the operations that mention every one of these words.",
        ),
    ),
    replies=(
        Reply(
            200,
            "An HTML page: this reference, or the operations that match `q`.",
            {"type": "string", "examples": ["<!doctype html><html lang=en>…</html>"]},
            media_type="text/html",
        ),
        INVALID,
    ),
)
async def docs(request: web.Request, i: Input) -> web.Response:
    """The page is made once, when the application is built; a search puts together the
    parts that match, already rendered, so it costs no more than a string join."""
    reference = request.app[DOCS]
    q = i.query.get("q")
    page = reference.search(q) if q and q.strip() else reference.page
    response = web.Response(text=page, content_type="text/html")
    response.headers["Content-Security-Policy"] = DOCS_CSP
    response.headers["Cache-Control"] = "no-cache"
    return response


#: How long a resource server or cache may keep the key set. A rotation signs with the new key
#: at once; a verifier that meets an unknown ``kid`` fetches the set again (RFC 7517 usage),
#: and the previous key stays in the set until every token it signed has expired.
JWKS_MAX_AGE = 60


@api.operation(
    "GET",
    "/.well-known/jwks.json",
    summary="The public keys that verify Tillbox's access tokens (JWKS)",
    tag="operations",
    auth="none",
    replies=(
        Reply(
            200,
            "The JSON Web Key Set (RFC 7517): the current signing key and, after a rotation, the previous "
            "one until the tokens it signed have expired. Verify `EdDSA` (Ed25519) only, choose the key by "
            "the token's `kid`, and check `typ: at+jwt`, `iss`, `aud` and `exp` (RFC 9068).",
            {
                "type": "object",
                "examples": [
                    {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "…", "kid": "…", "use": "sig", "alg": "EdDSA"}]}
                ],
            },
            media_type="application/jwk-set+json",
        ),
    ),
)
async def jwks(request: web.Request, i: Input) -> web.Response:
    response = json_response(request.app[SIGNING_KEYS].public_jwks())
    response.content_type = "application/jwk-set+json"
    response.headers["Cache-Control"] = f"public, max-age={JWKS_MAX_AGE}"
    return response

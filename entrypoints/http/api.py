"""Declaring operations once: route, auth, body and query schemas, responses.

``Api.operation`` registers a handler with everything the OpenAPI document needs;
``Api.install`` adds the routes to an aiohttp router wrapped in the validation
that the same declarations describe. Handlers receive already-validated input.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import random
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import attrs
import orjson
from aiohttp import web

from adapters.serialization import to_json
from core.domain.errors import AuthenticationRequired, DomainError, TransactionConflict, Unavailable, ValidationFailed
from core.domain.errors import Invalid as DomainInvalid
from core.domain.scopes import SCOPES, acting_role
from core.domain.users import Actor
from core.ports.idempotency import (
    IdempotencyClaim,
    IdempotencyKeyInFlight,
    IdempotencyKeyTaken,
    StoredRequest,
    current_claim,
)
from core.ports.unit_of_work import commits_in_context
from entrypoints.http.keys import ACTOR, CLIENT_ADDRESS, IDEMPOTENCY, REQUEST_ID
from entrypoints.http.middlewares import HttpError, error_response
from entrypoints.http.schemas import ID, PATH_IDS, Schema, specialize
from entrypoints.http.validation import ParameterCheck, SchemaCheck, check_schema

AUTH_LEVELS = ("none", "optional", "user", "staff", "admin")


@attrs.frozen
class Param:
    name: str
    schema: Schema
    description: str = ""
    required: bool = False


@attrs.frozen
class Reply:
    """A documented response: status, description and (for JSON bodies) its schema."""

    status: int
    description: str
    schema: Schema | None = None
    headers: tuple[str, ...] = ()
    media_type: str = "application/json"


@attrs.frozen
class Input:
    actor: Actor
    body: Any
    query: dict[str, Any]


Handler = Callable[[web.Request, Input], Awaitable[web.StreamResponse]]


@attrs.frozen
class Operation:
    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    description: str
    tag: str
    auth: str
    scope: str | None  # what a delegated credential must have been granted; None for auth "none"
    body: Schema | None
    query: tuple[Param, ...]
    replies: tuple[Reply, ...]
    headers: tuple[Param, ...] = ()
    public: bool = True  # listed in the OpenAPI document
    idempotent: bool = False  # honours Idempotency-Key (every POST, but for responses that carry secrets)
    rerun_when_unavailable: bool = False  # a 503 frees the key: running again is safe (card payments)
    # A protocol endpoint (OAuth 2): its parameters and errors are the protocol's, which says
    # unknown parameters are ignored (RFC 6749 §3.1); the handler reads its own form.
    protocol: bool = False


class Api:
    def __init__(self) -> None:
        self.operations: list[Operation] = []

    def operation(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        tag: str,
        auth: str,
        replies: Iterable[Reply],
        scope: str | None = None,
        body: Schema | None = None,
        query: Iterable[Param] = (),
        headers: Iterable[Param] = (),
        description: str = "",
        public: bool = True,
        idempotent: bool | None = None,
        rerun_when_unavailable: bool = False,
        protocol: bool = False,
    ) -> Callable[[Handler], Handler]:
        assert auth in AUTH_LEVELS, auth
        # Every operation a token can be sent to names its scope; one open to all without a
        # token (login, health, the payment provider's webhook) names none.
        assert (scope is None) == (auth == "none"), (path, auth, scope)
        assert scope is None or scope in SCOPES, scope

        def register(handler: Handler) -> Handler:
            if body is not None:
                check_schema(body)
            for p in (*query, *headers):
                check_schema(p.schema)
            self.operations.append(
                Operation(
                    method=method,
                    path=path,
                    handler=handler,
                    operation_id=handler.__name__,
                    summary=summary,
                    # cleandoc: a docstring's indentation would read as a code block in markdown
                    description=description or inspect.cleandoc(handler.__doc__ or ""),
                    tag=tag,
                    auth=auth,
                    scope=scope,
                    body=body,
                    query=tuple(query),
                    replies=tuple(replies),
                    headers=tuple(headers),
                    public=public,
                    idempotent=method == "POST" if idempotent is None else idempotent,
                    rerun_when_unavailable=rerun_when_unavailable,
                    protocol=protocol,
                )
            )
            return handler

        return register

    def install(self, app: web.Application, *, currency: str) -> None:
        for op in self.operations:
            handler = _wrap(op, Checks.of(op, currency))
            if op.method == "GET":
                # HEAD of a GET: the same status and headers, no body (aiohttp leaves it out).
                app.router.add_get(op.path, handler, name=op.operation_id, allow_head=True)
            else:
                app.router.add_route(op.method, op.path, handler, name=op.operation_id)


@attrs.frozen
class Checks:
    """An operation's declarations compiled once, when the application is built."""

    body: SchemaCheck | None
    query: ParameterCheck
    headers: tuple[tuple[str, SchemaCheck], ...]
    path: tuple[tuple[str, SchemaCheck], ...]  # the ids in the path, as the document declares them
    empty_body_is_object: bool  # a POST: no body at all means {}

    @classmethod
    def of(cls, op: Operation, currency: str) -> Checks:
        body = SchemaCheck(specialize(op.body, currency)) if op.body is not None else None
        return cls(
            body=body,
            query=ParameterCheck((p.name, p.schema, p.required) for p in op.query),
            headers=tuple((p.name, SchemaCheck(p.schema, root=p.name)) for p in op.headers),
            path=tuple((name, SchemaCheck(path_schema(name), root=name)) for name in path_parameters(op.path)),
            empty_body_is_object=op.method == "POST" and body is not None,
        )


_PATH_PARAMETER = re.compile(r"{(\w+)")


def path_parameters(route_path: str) -> list[str]:
    """The names of a route's path parameters: ``/orders/{order_id}/payments`` has ``order_id``."""
    return _PATH_PARAMETER.findall(route_path)


def path_schema(name: str) -> Schema:
    return PATH_IDS.get(name, ID)


def accepts_empty_body(op: Operation) -> bool:
    """Whether the operation takes a request without a body (as {}): the OpenAPI document
    says its body is optional."""
    return op.method == "POST" and op.body is not None and SchemaCheck(op.body).accepts({})


def _wrap(op: Operation, checks: Checks) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        actor = request[ACTOR]
        # Only whether someone signed in: what they may do, checked against their account
        # as it is now, is each use case's business (core/services/access.py).
        if op.auth in ("user", "staff", "admin") and actor.user_id is None and actor.client_id is None:
            raise AuthenticationRequired()
        if op.scope is not None:
            actor.require_scope(op.scope)  # the one place scopes are enforced
            if actor.client_id is not None and actor.user_id is None:
                actor = attrs.evolve(actor, role=acting_role(op.scope))
        for name, check in checks.path:
            if not check.accepts(request.match_info[name]):
                # Longer than any id (or otherwise not one): nothing is there, and nothing of
                # what was sent is echoed (the use case would quote it whole in its 404).
                raise web.HTTPNotFound()
        for name, check in checks.headers:
            value = request.headers.get(name)
            if value is not None:
                check.check(value)
        if op.protocol:
            return await op.handler(request, Input(actor=actor, body=None, query={}))
        for name, value in request.rel_url.query.items():
            if "\x00" in value:
                raise ValidationFailed({name: "cannot contain a NUL character"})
        query = checks.query.parse(request.rel_url.query)
        body = await _parse_body(checks, request) if checks.body is not None else None
        key = request.headers.get(IDEMPOTENCY_KEY) if op.idempotent else None
        if key is None:
            return await _run(op, request, Input(actor=actor, body=body, query=query))
        return await _idempotently(op, request, Input(actor=actor, body=body, query=query), key)

    handle.__name__ = op.operation_id
    return handle


#: How many times a use case given up by the store for a conflict (TransactionConflict: a
#: deadlock, a serialization failure) runs again before the client hears of it.
TRANSACTION_RETRIES = 3


async def _run(op: Operation, request: web.Request, i: Input) -> web.StreamResponse:
    """The operation's handler, run again (at most TRANSACTION_RETRIES times) when the store
    gave its transaction up for a conflict before anything of it was kept."""
    for attempt in itertools.count():
        committed = commits_in_context.get()
        try:
            return await op.handler(request, i)
        except TransactionConflict:
            if attempt == TRANSACTION_RETRIES or commits_in_context.get() != committed:
                raise
            # The other transaction usually needs a moment longer: a short, jittered pause.
            await asyncio.sleep(random.uniform(0, 0.005 * 2**attempt))  # noqa: S311 - jitter, not security
    raise AssertionError("unreachable")


IDEMPOTENCY_KEY = "Idempotency-Key"
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces, at most 255
_REPLAYED_HEADERS = ("Content-Type", "Location", "ETag", "Retry-After")


async def _idempotently(op: Operation, request: web.Request, i: Input, key: str) -> web.StreamResponse:
    """Run the operation under an idempotency claim (see core/ports/idempotency.py): the
    claim is recorded in the transaction of the effect; the response is attached after."""
    if not _KEY.match(key):
        raise ValidationFailed({IDEMPOTENCY_KEY: "must be 1-255 printable characters without spaces"})
    scope = f"user:{i.actor.user_id}" if i.actor.user_id is not None else f"ip:{request[CLIENT_ADDRESS]}"
    canonical = orjson.dumps(i.body, option=orjson.OPT_SORT_KEYS) if i.body is not None else b""
    service = request.app[IDEMPOTENCY]
    fingerprint = service.fingerprint(request.method, request.path_qs, canonical)
    stored = await service.lookup(scope, key)
    if stored is not None:
        return _replay(stored, fingerprint)
    claim = IdempotencyClaim(scope=scope, key=key, fingerprint=fingerprint)
    token = current_claim.set(claim)
    try:
        try:
            response = await _run(op, request, i)
        except IdempotencyKeyTaken:
            # Another request with this key committed first; ours was rolled back whole.
            stored = await service.lookup(scope, key)
            if stored is None:  # pragma: no cover - it was just committed
                raise
            return _replay(stored, fingerprint)
        except Unavailable as error:
            if claim.recorded and op.rerun_when_unavailable:
                # "Try again later" must not become the key's answer for 24 hours: the
                # operation is safe to run again (it reuses what it saved), so the key is freed.
                await service.release(scope, key)
                raise
            if not claim.recorded:
                raise
            response = error_response(request, request[REQUEST_ID], error)
        except (DomainError, HttpError) as error:
            if not claim.recorded:
                # Nothing was written. But a copy of this request may have committed while
                # this one ran, and its effect be why this one failed (it took the last
                # stock): then the answer is that copy's, not this error.
                stored = await service.lookup(scope, key, latest=True)
                if stored is not None:
                    return _replay(stored, fingerprint)
                raise  # a retry may simply run again
            # Written, then refused (a declined card): the refusal is the answer to replay.
            response = error_response(request, request[REQUEST_ID], error)
        except Exception as error:
            if not claim.recorded:
                raise
            # Something broke after the effect was committed: the key must not answer
            # "in flight" for a day. The 500 (logged with its traceback) is its answer.
            response = error_response(request, request[REQUEST_ID], error)
    finally:
        current_claim.reset(token)
    if claim.recorded and isinstance(response, web.Response):
        headers = {name: response.headers[name] for name in _REPLAYED_HEADERS if name in response.headers}
        await service.complete(scope, key, response.status, headers, response.body or b"")  # type: ignore[arg-type]
    return response


def _replay(stored: StoredRequest, fingerprint: str) -> web.Response:
    if not stored.matches(fingerprint):
        raise DomainInvalid("This Idempotency-Key was used for a different request.", code="idempotency_key_reused")
    if stored.status is None:
        raise IdempotencyKeyInFlight()
    response = web.Response(status=stored.status, body=stored.body, headers=stored.headers)
    response.headers["Idempotent-Replayed"] = "true"
    return response


async def _parse_body(checks: Checks, request: web.Request) -> Any:
    raw = await request.read()  # aiohttp enforces client_max_size (413)
    if not raw and checks.empty_body_is_object:
        # No body at all (whatever the Content-Type) is {}: an action that needs nothing is
        # done, and one that needs fields answers 422 naming them, as for {}.
        assert checks.body is not None
        checks.body.check({})
        return {}
    content_type = request.content_type
    if content_type != "application/json" and not (
        content_type.startswith("application/") and content_type.endswith("+json")
    ):
        raise HttpError(
            415,
            "unsupported_media_type",
            "Send the body as JSON with Content-Type: application/json.",
            {"content_type": content_type},
        )
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise HttpError(400, "malformed_json", f"The body is not valid JSON: {e.msg}.") from None
    assert checks.body is not None
    checks.body.check(data)
    if b"\\u0000" in raw:  # JSON can carry a NUL only escaped: look closer only then
        _refuse_nul(data, "")
    return _integers(data)


def _refuse_nul(value: Any, path: str) -> None:
    """A NUL character in any text of a body is refused, naming its field: no text Tillbox
    keeps may hold one (PostgreSQL's text cannot, and both stores answer alike)."""
    if isinstance(value, str) and "\x00" in value:
        raise ValidationFailed({path or "body": "cannot contain a NUL character"})
    if isinstance(value, dict):
        for key, item in value.items():
            _refuse_nul(key, path or "body")
            _refuse_nul(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_nul(item, f"{path}[{index}]")


def _integers(value: Any) -> Any:
    """JSON has one number type and JSON Schema counts 1200.0 as the integer 1200; the body
    was validated, so every float left where an integer belongs is integral and within the
    schemas' bounds (all below 2**53, where floats are exact). Fractions were refused."""
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        return {key: _integers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integers(item) for item in value]
    return value


# Responses.
def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=to_json(data), status=status, content_type="application/json", headers=headers)


def list_response(items: list[Any], next_cursor: str | None) -> web.Response:
    """A page in the list envelope. Cursors pass through as the store made them: opaque to
    clients and to this layer alike (the store refuses one that is not its own)."""
    return json_response({"data": items, "meta": {"has_more": next_cursor is not None, "next_cursor": next_cursor}})

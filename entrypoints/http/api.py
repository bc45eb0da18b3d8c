"""Declaring operations once: route, auth, body and query schemas, responses.

``Api.operation`` registers a handler with everything the OpenAPI document needs;
``Api.install`` adds the routes to an aiohttp router wrapped in the validation
that the same declarations describe. Handlers receive already-validated input.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import attrs
import jsonschema_rs
import orjson
from aiohttp import web
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from adapters.serialization import to_json
from core.domain.errors import AuthenticationRequired, DomainError, Unavailable, ValidationFailed
from core.domain.errors import Invalid as DomainInvalid
from core.domain.users import Actor, Role
from core.ports.idempotency import (
    IdempotencyClaim,
    IdempotencyKeyInFlight,
    IdempotencyKeyTaken,
    StoredRequest,
    current_claim,
)
from entrypoints.http.keys import ACTOR, AUTH, IDEMPOTENCY, REQUEST_ID
from entrypoints.http.middlewares import HttpError, error_response
from entrypoints.http.schemas import Schema, specialize

AUTH_LEVELS = ("none", "optional", "user", "staff", "admin")


@attrs.frozen
class BodyValidator:
    """One body schema, checked twice over: jsonschema-rs decides (in Rust: ~1 us for an
    order, where the pure-Python jsonschema took ~140 us, a fifth of the whole request),
    and only a refused body is walked by jsonschema to say which field is wrong and why.
    Both read the schema as JSON Schema 2020-12; where their regex dialects differ (a
    trailing newline before ``$``), the Rust one, ECMAScript's, is the one clients use."""

    fast: Any  # jsonschema_rs validator
    explain: Draft202012Validator

    @classmethod
    def for_schema(cls, schema: Schema) -> BodyValidator:
        return cls(
            fast=jsonschema_rs.validator_for(schema, validate_formats=False),
            explain=Draft202012Validator(schema),
        )

    def problems(self, data: Any) -> dict[str, str]:
        if self.fast.is_valid(data):
            return {}
        errors = sorted(self.explain.iter_errors(data), key=lambda e: list(e.absolute_path))
        if errors:
            return _fields(errors)
        return {_field(e.instance_path): e.message for e in self.fast.iter_errors(data)}


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
    body: Schema | None
    query: tuple[Param, ...]
    replies: tuple[Reply, ...]
    headers: tuple[Param, ...] = ()
    public: bool = True  # listed in the OpenAPI document
    idempotent: bool = False  # honours Idempotency-Key (every POST, but for responses that carry secrets)
    rerun_when_unavailable: bool = False  # a 503 frees the key: running again is safe (card payments)


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
        body: Schema | None = None,
        query: Iterable[Param] = (),
        headers: Iterable[Param] = (),
        description: str = "",
        public: bool = True,
        idempotent: bool | None = None,
        rerun_when_unavailable: bool = False,
    ) -> Callable[[Handler], Handler]:
        assert auth in AUTH_LEVELS, auth

        def register(handler: Handler) -> Handler:
            if body is not None:
                Draft202012Validator.check_schema(body)
            self.operations.append(
                Operation(
                    method=method,
                    path=path,
                    handler=handler,
                    operation_id=handler.__name__,
                    summary=summary,
                    description=description or (handler.__doc__ or "").strip(),
                    tag=tag,
                    auth=auth,
                    body=body,
                    query=tuple(query),
                    replies=tuple(replies),
                    headers=tuple(headers),
                    public=public,
                    idempotent=method == "POST" if idempotent is None else idempotent,
                    rerun_when_unavailable=rerun_when_unavailable,
                )
            )
            return handler

        return register

    def install(self, app: web.Application, *, currency: str) -> None:
        for op in self.operations:
            validator = BodyValidator.for_schema(specialize(op.body, currency)) if op.body is not None else None
            app.router.add_route(op.method, op.path, _wrap(op, validator), name=op.operation_id)


async def _authorize_privileged(op: Operation, request: web.Request, actor: Actor) -> Actor:
    if actor.user_id is None:
        raise AuthenticationRequired()
    # Staff and admin powers are checked against the account as it is now, not as it
    # was when the token was issued.
    actor = await request.app[AUTH].authorize(actor)
    if op.auth == "staff":
        actor.require_staff()
    else:
        actor.require_admin()
    return actor


def _wrap(op: Operation, validator: BodyValidator | None) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        actor = request[ACTOR]
        if op.auth in ("staff", "admin"):
            actor = await _authorize_privileged(op, request, actor)
        elif op.auth == "user":
            if actor.user_id is None:
                raise AuthenticationRequired()
            if op.method != "GET" or actor.role is not Role.CUSTOMER:
                # A change, or powers beyond a customer's (staff may pay manually, see every
                # order): checked against the account as it is now, like staff-only routes.
                # A customer's own reads stay stateless: the hot path.
                actor = await request.app[AUTH].authorize(actor)
        if op.headers:
            _check_headers(op, request)
        query = _parse_query(op, request) if op.query else {}
        body = await _parse_body(validator, request) if validator is not None else None
        key = request.headers.get(IDEMPOTENCY_KEY) if op.idempotent else None
        if key is None:
            return await op.handler(request, Input(actor=actor, body=body, query=query))
        return await _idempotently(op, request, Input(actor=actor, body=body, query=query), key)

    handle.__name__ = op.operation_id
    return handle


IDEMPOTENCY_KEY = "Idempotency-Key"
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces, at most 255
_REPLAYED_HEADERS = ("Content-Type", "Location", "ETag", "Retry-After")


async def _idempotently(op: Operation, request: web.Request, i: Input, key: str) -> web.StreamResponse:
    """Run the operation under an idempotency claim (see core/ports/idempotency.py): the
    claim is recorded in the transaction of the effect; the response is attached after."""
    if not _KEY.match(key):
        raise ValidationFailed({IDEMPOTENCY_KEY: "must be 1-255 printable characters without spaces"})
    scope = f"user:{i.actor.user_id}" if i.actor.user_id is not None else f"ip:{request.remote}"
    canonical = orjson.dumps(i.body, option=orjson.OPT_SORT_KEYS) if i.body is not None else b""
    fingerprint = hashlib.sha256(
        b"%s %s\n%s" % (request.method.encode(), request.path_qs.encode(), canonical)
    ).hexdigest()
    service = request.app[IDEMPOTENCY]
    stored = await service.lookup(scope, key)
    if stored is not None:
        return _replay(stored, fingerprint)
    claim = IdempotencyClaim(scope=scope, key=key, fingerprint=fingerprint)
    token = current_claim.set(claim)
    try:
        try:
            response = await op.handler(request, i)
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
                stored = await service.lookup(scope, key, including_pending=True)
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
    if stored.fingerprint != fingerprint:
        raise DomainInvalid("This Idempotency-Key was used for a different request.", code="idempotency_key_reused")
    if stored.status is None:
        raise IdempotencyKeyInFlight()
    response = web.Response(status=stored.status, body=stored.body, headers=stored.headers)
    response.headers["Idempotent-Replayed"] = "true"
    return response


async def _parse_body(validator: BodyValidator, request: web.Request) -> Any:
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
    raw = await request.read()  # aiohttp enforces client_max_size (413)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise HttpError(400, "malformed_json", f"The body is not valid JSON: {e.msg}.") from None
    problems = validator.problems(data)
    if problems:
        raise ValidationFailed(problems)
    return _integers(data)


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


def _field(path: Iterable[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def _fields(errors: list[ValidationError]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for e in errors:
        where = _field(e.absolute_path)
        v = e.validator
        if v in ("oneOf", "anyOf") and e.context:
            # Report the alternative the client most nearly sent: the one with fewest errors.
            branches: dict[Any, list[ValidationError]] = {}
            for sub in e.context:
                branches.setdefault(sub.relative_schema_path[0], []).append(sub)
            for name, problem in _fields(min(branches.values(), key=len)).items():
                fields.setdefault(name, problem)
            continue
        if v == "required":
            missing = [p for p in e.validator_value if isinstance(e.instance, dict) and p not in e.instance]
            for name in missing:
                fields.setdefault(_field([*e.absolute_path, name]), "is required")
            continue
        if v == "additionalProperties" and isinstance(e.instance, dict):
            allowed = e.schema.get("properties", {})
            for name in e.instance:
                if name not in allowed:
                    fields.setdefault(_field([*e.absolute_path, name]), "is not a field of this request")
            continue
        fields.setdefault(where, _message(e))
    return fields


_TYPE_NAMES = {
    "integer": "an integer",
    "string": "a string",
    "boolean": "true or false",
    "object": "an object",
    "array": "an array",
    "number": "a number",
    "null": "null",
}


def _message(e: ValidationError) -> str:
    v, value = e.validator, e.validator_value
    if v == "type":
        kinds = value if isinstance(value, list) else [value]
        return "must be " + " or ".join(_TYPE_NAMES.get(str(k), str(k)) for k in kinds)
    if v == "minimum":
        return f"must be at least {value}"
    if v == "maximum":
        return f"must be at most {value}"
    if v == "minLength":
        return f"must have at least {value} characters"
    if v == "maxLength":
        return f"must have at most {value} characters"
    if v == "enum":
        return "must be one of " + ", ".join(map(str, value))
    if v == "pattern":
        return "has characters or a form that is not allowed"
    if v == "minProperties":
        return "must change at least one field"
    if v == "minItems":
        return f"must have at least {value} items"
    if v == "maxItems":
        return f"must have at most {value} items"
    if v == "not":
        return "has a value that is not allowed"
    if v == "const":
        return f"must be {value!r}"
    return "is not valid"


def _check_headers(op: Operation, request: web.Request) -> None:
    fields = {}
    for p in op.headers:
        value = request.headers.get(p.name)
        if value is not None and "pattern" in p.schema and not re.search(p.schema["pattern"], value):
            fields[p.name] = "has a form that is not allowed"
    if fields:
        raise ValidationFailed(fields)


_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


def _parse_query(op: Operation, request: web.Request) -> dict[str, Any]:
    values: dict[str, Any] = {}
    fields: dict[str, str] = {}
    params = request.rel_url.query
    for p in op.query:
        raw = params.get(p.name)
        if raw is None:
            if "default" in p.schema:
                values[p.name] = p.schema["default"]
            elif p.required:
                fields[p.name] = "is required"
            continue
        kind = p.schema.get("type")
        try:
            if kind == "integer":
                text = raw.strip()
                if not text.lstrip("-").isdigit() or len(text) > 20:
                    raise ValueError
                value: Any = int(text)
            elif kind == "boolean":
                value = _BOOLEANS[raw.lower()]
            else:
                value = raw
        except (ValueError, KeyError):
            fields[p.name] = "must be " + _TYPE_NAMES.get(str(kind), str(kind))
            continue
        problem = _check_scalar(p.schema, value)
        if problem:
            fields[p.name] = problem
        else:
            values[p.name] = value
    if fields:
        raise ValidationFailed(fields)
    return values


def _check_scalar(schema: Schema, value: Any) -> str | None:
    if "minimum" in schema and value < schema["minimum"]:
        return f"must be at least {schema['minimum']}"
    if "maximum" in schema and value > schema["maximum"]:
        return f"must be at most {schema['maximum']}"
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            return f"must have at least {schema['minLength']} characters"
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            return f"must have at most {schema['maxLength']} characters"
        if "enum" in schema and value not in schema["enum"]:
            return "must be one of " + ", ".join(schema["enum"])
    return None


# Responses.
def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=to_json(data), status=status, content_type="application/json", headers=headers)


def list_response(items: list[Any], next_cursor: str | None) -> web.Response:
    """A page in the list envelope. Cursors pass through as the store made them: opaque to
    clients and to this layer alike (the store refuses one that is not its own)."""
    return json_response({"data": items, "meta": {"has_more": next_cursor is not None, "next_cursor": next_cursor}})

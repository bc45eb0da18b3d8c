"""End-to-end fixtures: the real application on a free port, a real store (a SQLite file in
a temporary directory, or the test session's PostgreSQL database), real HTTP through
aiohttp's client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import attrs
import pytest
from aiohttp import web
from dependency_injector import providers

from adapters.postgres import PostgresDatabase
from adapters.timestamps import format_timestamp, parse_timestamp
from core.domain.money import Money
from core.domain.users import Actor, Role
from core.ports.payments import ProviderPayment
from core.services.auth import CreateUser
from core.services.housekeeping import Housekeeping
from entrypoints.container import Container, build_container
from entrypoints.http.app import create_app
from entrypoints.http.connections import listening
from entrypoints.http.keys import HOUSEKEEPING
from entrypoints.logs import AccessLog
from entrypoints.settings import load_settings
from tests.harness import until_async
from tests.localstripe.fixtures import (
    SECRET_KEY,
    WEBHOOK_SECRET,
    localstripe_url_fixture,  # noqa: F401 - a fixture
    make_gateway,
)
from tests.postgres import truncate_all

PASSWORD = "correct battery horse staple"


class Api:
    """A thin JSON client for one running server."""

    def __init__(self, session: aiohttp.ClientSession, base: str, container: Container, housekeeping: Housekeeping):
        self.session = session
        self.base = base
        self.container = container
        self.housekeeping = housekeeping
        # What the server answered to each Stripe webhook it was sent, by whomever.
        self.webhook_answers: list[WebhookAnswer] = []

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        data: Any = None,
    ) -> tuple[int, Any, Any]:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        async with self.session.request(
            method, self.base + path, json=json, data=data, headers=all_headers
        ) as response:
            raw = await response.read()
            body = None
            if raw and response.content_type == "application/json":
                body = await response.json()
            return response.status, body, response.headers

    async def create_user(self, email: str, role: str = "customer", password: str = PASSWORD) -> str:
        auth = await self.container.auth_service()
        user = await auth.create_user(
            CreateUser(actor=Actor.operator(), email=email, password=password, role=Role(role))
        )
        return user.id

    async def login(self, email: str, password: str = PASSWORD) -> dict[str, Any]:
        status, body, _ = await self.call("POST", "/api/v1/auth/login", json={"email": email, "password": password})
        assert status == 200, body
        return body

    async def token_for(self, email: str, role: str = "customer") -> str:
        await self.create_user(email, role)
        return (await self.login(email))["access_token"]

    async def account(self, email: str, role: str = "customer") -> tuple[str, str]:
        """A new user: (their id, an access token)."""
        user_id = await self.create_user(email, role)
        return user_id, (await self.login(email))["access_token"]

    async def housekeeping_round(self, timeout: float = 30.0) -> None:
        """Return once a whole round of the server's housekeeping has run after this call
        (begun after it, and finished without failing)."""
        begun, failed = self.housekeeping.begun, self.housekeeping.failed

        async def done() -> bool:
            return self.housekeeping.finished + self.housekeeping.failed > begun

        await until_async(done, timeout=timeout, every=0.02, what="a housekeeping round")
        assert self.housekeeping.failed == failed, "a housekeeping round failed: see the log"

    async def wait_for_webhook(self, event_type: str, object_id: str, timeout: float = 10.0) -> WebhookAnswer:
        """The server's answer to the first delivery of ``event_type`` about ``object_id``."""
        async with asyncio.timeout(timeout):
            while True:
                for answer in self.webhook_answers:
                    if answer.event_type == event_type and answer.object_id == object_id:
                        return answer
                await asyncio.sleep(0.05)


@attrs.frozen
class WebhookAnswer:
    event_id: str | None
    event_type: str | None
    object_id: str | None
    status: int
    body: Any


def _record_webhook_answers(app: web.Application, answers: list[WebhookAnswer]) -> None:
    async def record(request: web.Request, response: web.StreamResponse) -> None:
        if request.path != "/api/v1/webhooks/stripe" or not isinstance(response, web.Response):
            return
        try:
            event = json.loads(await request.read())
            event_id, event_type, object_id = event.get("id"), event.get("type"), event["data"]["object"].get("id")
        except Exception:  # not an event: recorded without its names
            event_id = event_type = object_id = None
        body = json.loads(response.body) if isinstance(response.body, bytes) and response.body else None
        answers.append(WebhookAnswer(event_id, event_type, object_id, response.status, body))

    app.on_response_prepare.append(record)


@attrs.frozen
class Store:
    """Where a test's servers keep their data: ``sqlite`` (a file in each server's data
    directory) or ``postgres`` (the database at ``url``, emptied for the test)."""

    kind: str
    url: str = ""

    def env(self) -> dict[str, str]:
        """The settings that select it."""
        return {"TILLBOX_DATABASE_URL": self.url} if self.url else {}


SQLITE = Store("sqlite")

#: ``pytestmark = on_every_store`` runs each test of a suite on SQLite and on PostgreSQL.
on_every_store = pytest.mark.parametrize(
    "store", [pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


@pytest.fixture
async def store(request: pytest.FixtureRequest) -> Store:
    """The store of the test's servers (``api``, ``stripe_api``, ``clock_api``, and
    ``serve(..., store=store)``): SQLite, unless the suite says ``pytestmark = on_every_store``;
    then each test runs on SQLite and on PostgreSQL (marked ``postgres``), there on a fresh,
    empty store: the session's database of tests/postgres.py, emptied by truncate_all.

    On every store, the suites that exercise it: admin, auth, catalog caching, errors,
    hardening, hostile bodies, idempotency, orders, pagination, payments, products, races,
    reads, request conventions, stripe, webhooks; and test_crash (its own servers).
    test_scale_out is PostgreSQL's alone (two servers on one database).
    On SQLite only, those of HTTP plumbing, where the store plays no part: connections,
    cors, docs, docs browser, greeting, logs, malformed http, openapi, proxies; and the
    operator's commands on a data directory and its SQLite file: cli, operator, database url."""
    kind = getattr(request, "param", "sqlite")
    if kind == "sqlite":
        return SQLITE
    url = request.getfixturevalue("postgres_url")
    await truncate_all(url)
    return Store("postgres", url)


def settings_for(data_dir: Path, **env: str) -> Any:
    environment = {"TILLBOX_DATA_DIR": str(data_dir), "TILLBOX_SERVER_ACCESS_LOG": "false", **env}
    return load_settings(None, environment)


@contextlib.asynccontextmanager
async def serve(
    data_dir: Path,
    *,
    store: Store = SQLITE,
    clock: Any = None,
    gateway: Any = None,
    access_log: AccessLog | None = None,
    **env: str,
) -> AsyncIterator[Api]:
    """A server on a free port over a fresh data directory and ``store``, with settings
    ``env`` on top of the defaults and, if given, ``clock`` in place of the system clock,
    ``gateway`` in place of the payment gateway the settings would make and an ``access_log``."""
    container = build_container(settings_for(data_dir, **(store.env() | env)))
    if clock is not None:
        container.clock.override(providers.Object(clock))
    if gateway is not None:
        container.payment_gateway.override(providers.Object(gateway))
    app = create_app(container, access_log=access_log)
    answers: list[WebhookAnswer] = []
    _record_webhook_answers(app, answers)
    # Served as `tillbox serve` serves it (the same protocol, limits and runner options).
    async with listening(app, "127.0.0.1", 0) as port, aiohttp.ClientSession() as session:
        running = Api(session, f"http://127.0.0.1:{port}", container, app[HOUSEKEEPING])
        running.webhook_answers = answers
        yield running


@pytest.fixture
async def api(tmp_path: Path, store: Store) -> AsyncIterator[Api]:
    async with serve(tmp_path / "data", store=store) as running:
        yield running


def stripe_settings(localstripe_url: str) -> dict[str, str]:
    """Card payments on localstripe; webhooks verified with the secret the tests sign with."""
    return {
        "TILLBOX_STRIPE_SECRET_KEY": SECRET_KEY,
        "TILLBOX_STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "TILLBOX_STRIPE_API_BASE": localstripe_url,
    }


@pytest.fixture
async def stripe_api(tmp_path: Path, localstripe_url: str, store: Store) -> AsyncIterator[Api]:
    async with serve(tmp_path / "data", store=store, **stripe_settings(localstripe_url)) as running:
        yield running


E2E_WEBHOOK_ID = "tillbox-e2e"
STRIPE_EVENTS = ("payment_intent.succeeded", "payment_intent.payment_failed")


async def register_webhook(localstripe_url: str, url: str, events: tuple[str, ...] = STRIPE_EVENTS) -> None:
    """Point localstripe's endpoint ``E2E_WEBHOOK_ID`` at ``url`` (replacing what it was)."""
    form = [("url", url), ("secret", WEBHOOK_SECRET), *(("events[]", e) for e in events)]
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{localstripe_url}/_config/webhooks/{E2E_WEBHOOK_ID}", data=form) as response,
    ):
        assert response.status == 200, await response.text()


@contextlib.asynccontextmanager
async def webhooks_to(api: Api, localstripe_url: str) -> AsyncIterator[None]:
    """localstripe delivers its payment events to this server while the block runs.
    localstripe never forgets an endpoint, so on the way out it is pointed at an event that
    never happens (no delivery to a port that another test may have by then)."""
    await register_webhook(localstripe_url, api.base + "/api/v1/webhooks/stripe")
    try:
        yield
    finally:
        await register_webhook(localstripe_url, api.base + "/api/v1/webhooks/stripe", ("tillbox.never",))


class HeldGateway:
    """Stripe (localstripe) whose answers to card payments are held back until released:
    Stripe has the payment, and its webhook may arrive before our API hears back."""

    def __init__(self, localstripe_url: str):
        self.inner = make_gateway(localstripe_url)
        self.answers: asyncio.Queue[ProviderPayment] = asyncio.Queue()
        self.release = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def create_card_payment(
        self, *, amount: Money, payment_method: str, idempotency_key: str, metadata: dict[str, str]
    ) -> ProviderPayment:
        answer = await self.inner.create_card_payment(
            amount=amount, payment_method=payment_method, idempotency_key=idempotency_key, metadata=metadata
        )
        self.answers.put_nowait(answer)
        await self.release.wait()
        return answer


@contextlib.asynccontextmanager
async def held_stripe(data_dir: Path, localstripe_url: str, **kwargs: Any) -> AsyncIterator[tuple[Api, HeldGateway]]:
    """A server on localstripe through a HeldGateway (``kwargs`` as for ``serve``)."""
    gateway = HeldGateway(localstripe_url)
    try:
        async with serve(data_dir, gateway=gateway, **stripe_settings(localstripe_url), **kwargs) as api:
            try:
                yield api, gateway
            finally:
                gateway.release.set()  # nothing left hanging when the server stops
    finally:
        await gateway.inner.close()


@pytest.fixture
async def stripe_webhooks(stripe_api: Api, localstripe_url: str) -> AsyncIterator[Api]:
    """``stripe_api``, with localstripe delivering its payment events to it."""
    async with webhooks_to(stripe_api, localstripe_url):
        yield stripe_api


class MovableClock:
    """The system clock, plus however far a test has moved it forward."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, **kwargs: float) -> None:
        self.offset += timedelta(**kwargs)


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
async def clock_api(tmp_path: Path, clock: MovableClock, store: Store) -> AsyncIterator[Api]:
    """A server on ``clock`` that looks for expired orders every second."""
    async with serve(tmp_path / "data", store=store, clock=clock, TILLBOX_ORDERS_EXPIRY_CHECK_SECONDS="1") as running:
        yield running


# The catalog and orders, as tests set them up.
async def create_product(api: Api, token: str, **fields: Any) -> dict[str, Any]:
    body = {"sku": "SKU-1", "name": "Blue mug", "price": 1250, "stock": 10, **fields}
    status, product, _ = await api.call("POST", "/api/v1/products", json=body, token=token)
    assert status == 201, product
    return product


async def place_order(api: Api, token: str, items: list[dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
    status, order, _ = await api.call("POST", "/api/v1/orders", json={"items": items}, token=token, **kwargs)
    assert status == 201, order
    return order


# The store, read (and, for what no request can do, written) behind the server's back: the
# tables and columns are the same in both stores; SQL is written with ``?`` placeholders.
def numbered(sql: str) -> str:
    """``sql`` with PostgreSQL's placeholders ($1, $2, ...) for ``?``."""
    parts = sql.split("?")
    return parts[0] + "".join(f"${n}{part}" for n, part in enumerate(parts[1:], start=1))


async def scalar(api: Api, sql: str, *params: Any) -> Any:
    """The first column of the first row of ``sql`` on the server's store (None if no row).
    Values come as each store keeps them (a timestamp: text in SQLite, a datetime in
    PostgreSQL; a sum: an int, or a Decimal, which compares equal to it)."""
    database = await api.container.database()
    if isinstance(database, PostgresDatabase):
        return await database.fetchval(numbered(sql), *params)
    return database.read_scalar(sql, params)


def stored_time(value: str | datetime) -> datetime:
    """A timestamp read with ``scalar`` or ``rows``, from either store."""
    return value if isinstance(value, datetime) else parse_timestamp(value)


async def rows(api: Api, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Every row of ``sql`` on the server's store, as tuples (values as ``scalar`` says)."""
    database = await api.container.database()
    if isinstance(database, PostgresDatabase):
        async with database.pool().acquire() as conn:
            return [tuple(row) for row in await conn.fetch(numbered(sql), *params)]
    return [tuple(row) for row in database.reader_connection().execute(sql, params).fetchall()]


async def table_names(api: Api) -> list[str]:
    """Every table of the store (SQLite's own included: sqlite_sequence, sqlite_stat1)."""
    database = await api.container.database()
    if isinstance(database, PostgresDatabase):
        found = await rows(api, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    else:
        found = await rows(api, "SELECT name FROM sqlite_schema WHERE type = 'table'")
    return sorted(name for (name,) in found)


#: What a write behind the server's back raises when the schema refuses it, in either store.
INTEGRITY_ERRORS = (sqlite3.IntegrityError, asyncpg.IntegrityConstraintViolationError)


async def write_behind(api: Api, sql: str, *params: Any) -> None:
    """Run ``sql`` on a connection of its own, as another process would; datetimes are
    written as the store keeps them."""
    database = await api.container.database()
    if isinstance(database, PostgresDatabase):
        conn = await asyncpg.connect(database.url, timeout=10)
        try:
            await conn.execute(numbered(sql), *params)
        finally:
            await conn.close()
        return
    encoded = tuple(format_timestamp(p) if isinstance(p, datetime) else p for p in params)
    with contextlib.closing(sqlite3.connect(database.path, timeout=10)) as conn, conn:
        conn.execute(sql, encoded)


async def stock_of(api: Api, product_id: str) -> int:
    return int(await scalar(api, "SELECT stock FROM products WHERE id = ?", product_id))


async def count_rows(api: Api, table: str, where: str = "TRUE", params: tuple[Any, ...] = ()) -> int:
    return int(await scalar(api, f"SELECT count(*) FROM {table} WHERE {where}", *params))


# Raw HTTP, for what aiohttp's client would not send (or would mend) and for connections held open.
RAW_DEADLINE = 15.0  # seconds any awaited close or answer may take, on a busy machine


def port_of(api: Api) -> int:
    return int(api.base.rsplit(":", 1)[1])


@contextlib.asynccontextmanager
async def raw_connection(api: Api) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A TCP connection to the server, aborted on the way out."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(api))
    try:
        yield reader, writer
    finally:
        writer.transport.abort()


async def raw_exchange(api: Api, data: bytes, timeout: float = RAW_DEADLINE) -> bytes:
    """Send ``data`` on a fresh connection; everything the server sends until it closes."""
    async with raw_connection(api) as (reader, writer):
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)


def split_response(raw: bytes) -> tuple[int, dict[str, str], Any]:
    """A raw response: status, headers (names lowercased) and body (parsed when JSON)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    parsed: Any = body
    if headers.get("content-type", "").startswith("application/json") and body:
        parsed = json.loads(body)
    return int(status_line.split()[1]), headers, parsed


def assert_error(status: int, body: Any, expected_status: int, code: str | None = None) -> None:
    """Every error has the one envelope of PRODUCT.md."""
    assert status == expected_status, body
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "request_id", "timestamp", "details"}, error
    assert error["request_id"] and error["timestamp"].endswith("Z")
    assert "Traceback" not in error["message"]
    if code is not None:
        assert error["code"] == code, error

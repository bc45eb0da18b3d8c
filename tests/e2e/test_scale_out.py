"""Scaling out: two `tillbox serve` processes (the console script, each with a data directory
of its own, as on two hosts) on one PostgreSQL database. Stock is never oversold and
refunds never exceed the capture whichever instance each request reaches; an instance
killed during writes loses nothing and doubles nothing; the database restarted under load
(one test restarts the machine's PostgreSQL server: see its docstring), or its backends
ended, costs 503s in the envelope and nothing half-written, and service resumes by itself;
a pool with every connection taken answers 503 with Retry-After instead of hanging; a
change made through one instance is seen in the other's cached catalog within 100 ms.

Each instance has a data directory of its own, as on separate hosts, and shares nothing
with the other but database.url: the signing keys and the request-digest key are in the
store, so a token issued by one is accepted by the other, and a request retried with its
Idempotency-Key through the other instance is known there as the same request.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from yarl import URL

from tests.crash import crash
from tests.e2e.conftest import assert_error
from tests.harness import Server, environment, run_tillbox, until_async
from tests.postgres import truncate_all

pytestmark = pytest.mark.postgres

#: The console script of this environment, as an operator runs it.
TILLBOX = (str(Path(sys.executable).with_name("tillbox")),)
PASSWORD = "scale out passphrase 42"
DEADLINE = 30.0  # seconds any awaited answer, start or recovery may take on a busy machine
#: How long after a commit on one instance the others' cached pages show it (the store's
#: change_latency: adapters/postgres/database.py).
CHANGE_LATENCY = 0.1


class Instances:
    """``tillbox serve`` processes on the database at ``url``, each in a directory of its
    own under ``root`` (instance ``n`` in ``root/<n>``), sharing only the database."""

    def __init__(self, root: Path, url: str, **settings: str):
        self.root = root
        self.url = url
        self.env = environment(
            {
                "TILLBOX_DATABASE_URL": url,
                "TILLBOX_SERVER_ACCESS_LOG": "false",
                "TILLBOX_AUTH_REGISTRATIONS_PER_IP": "1000",
                **settings,
            }
        )
        self.servers: list[Server] = []

    def directory(self, n: int) -> Path:
        path = self.root / str(n)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def start(self, n: int) -> Server:
        """Start instance ``n`` (again, after a kill: the same directory)."""
        cwd = self.directory(n)
        server = Server(cwd, command=TILLBOX, env=self.env, ready_timeout=DEADLINE)
        if n < len(self.servers):
            self.servers[n] = server
        else:
            self.servers.append(server)
        return server

    def tillbox(self, *args: str, stdin: str | None = None) -> str:
        result = run_tillbox(*args, cwd=self.directory(0), command=TILLBOX, env=self.env, stdin=stdin)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def logged(self, request_id: str) -> list[dict[str, Any]]:
        """What the instances logged about a request (a 500's traceback, say)."""
        return [entry for server in self.servers for entry in server.log() if request_id in str(entry)]

    def kill_all(self) -> None:
        for server in self.servers:
            server.kill()


def _empty(url: str) -> None:
    """truncate_all, from a synchronous fixture (on a thread with a loop of its own)."""
    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, truncate_all(url)).result()


@contextlib.contextmanager
def instances(tmp_path: Path, url: str, count: int = 2, **settings: str) -> Iterator[Instances]:
    """``count`` instances on the (emptied) database at ``url``, with a staff member
    staff@scale.test; stopped (SIGKILL) on the way out."""
    _empty(url)
    running = Instances(tmp_path / "instances", url, **settings)
    try:
        running.tillbox(
            "users", "create", "--email", "staff@scale.test", "--role", "staff", "--password-stdin", stdin=PASSWORD
        )
        for n in range(count):
            running.start(n)  # the first makes the keys in the store as it starts; the others read them
        yield running
    finally:
        running.kill_all()


@pytest.fixture
def pair(tmp_path: Path, postgres_url: str) -> Iterator[Instances]:
    with instances(tmp_path, postgres_url) as running:
        yield running


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=DEADLINE)) as client:
        yield client


async def call(
    session: aiohttp.ClientSession,
    server: Server,
    method: str,
    path: str,
    *,
    token: str | None = None,
    json: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, Any]:
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    async with session.request(method, server.base + path, json=json, headers=sent) as response:
        body = await response.json() if response.content_type == "application/json" else await response.read()
        return response.status, body, response.headers


async def login(session: aiohttp.ClientSession, server: Server, email: str) -> str:
    status, tokens, _ = await call(
        session, server, "POST", "/api/v1/auth/login", json={"email": email, "password": PASSWORD}
    )
    assert status == 200, tokens
    return str(tokens["access_token"])


async def customer(session: aiohttp.ClientSession, server: Server, email: str) -> str:
    """A customer registered through ``server``; their access token."""
    status, user, _ = await call(
        session, server, "POST", "/api/v1/auth/register", json={"email": email, "password": PASSWORD}
    )
    assert status == 201, user
    return await login(session, server, email)


async def product(session: aiohttp.ClientSession, server: Server, staff: str, **fields: Any) -> dict[str, Any]:
    status, created, _ = await call(session, server, "POST", "/api/v1/products", token=staff, json=fields)
    assert status == 201, created
    return dict(created)


@contextlib.asynccontextmanager
async def database(url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the test's own to the instances' database."""
    conn = await asyncpg.connect(url, timeout=10)
    try:
        yield conn
    finally:
        await conn.close()


# (a) and (b): races over both instances.
async def test_50_orders_for_the_last_10_units_over_two_instances(
    pair: Instances, session: aiohttp.ClientSession
) -> None:
    a, b = pair.servers
    staff = await login(session, a, "staff@scale.test")
    customers = [await customer(session, (a, b)[i % 2], f"customer{i}@scale.test") for i in range(5)]
    last = await product(session, a, staff, sku="LAST-1", name="Last ones", price=1000, stock=10)
    plenty = await product(session, b, staff, sku="MANY-1", name="Plenty", price=100, stock=500)
    items = [{"product_id": plenty["id"], "quantity": 2}, {"sku": "LAST-1", "quantity": 1}]

    results = await asyncio.gather(
        *(
            call(session, (a, b)[i % 2], "POST", "/api/v1/orders", token=customers[i % 5], json={"items": items})
            for i in range(50)
        )
    )

    statuses = collections.Counter(status for status, _, _ in results)
    assert statuses == {201: 10, 409: 40}, statuses
    for status, body, _ in results:
        if status == 409:
            assert_error(status, body, 409, "insufficient_stock")
            assert body["error"]["details"]["lines"] == [
                {"index": 1, "product_id": last["id"], "sku": "LAST-1", "requested": 1, "available": 0}
            ]
    created = {body["id"] for status, body, _ in results if status == 201}
    assert len(created) == 10
    async with database(pair.url) as conn:
        assert await conn.fetchval("SELECT stock FROM products WHERE id = $1", last["id"]) == 0
        assert await conn.fetchval("SELECT stock FROM products WHERE id = $1", plenty["id"]) == 500 - 2 * 10
        assert {row[0] for row in await conn.fetch("SELECT id FROM orders")} == created
        assert await conn.fetchval("SELECT count(*) FROM order_lines WHERE product_id = $1", last["id"]) == 10
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE type = 'order.created'") == 10
    # Both instances say so, whichever the order was placed through.
    for server in (a, b):
        status, got, _ = await call(session, server, "GET", f"/api/v1/products/{last['id']}")
        assert (status, got["stock"]) == (200, 0)


async def test_20_refunds_of_one_payment_over_two_instances_never_exceed_the_capture(
    pair: Instances, session: aiohttp.ClientSession
) -> None:
    a, b = pair.servers
    staff = await login(session, a, "staff@scale.test")
    buyer = await customer(session, b, "buyer@scale.test")
    await product(session, a, staff, sku="TV-1", name="Television", price=2000, stock=1)
    status, order, _ = await call(
        session, b, "POST", "/api/v1/orders", token=buyer, json={"items": [{"sku": "TV-1", "quantity": 1}]}
    )
    assert status == 201, order
    status, payment, _ = await call(
        session,
        a,
        "POST",
        f"/api/v1/orders/{order['id']}/payments",
        token=staff,
        json={"method": "manual", "reference": "cash"},
    )
    assert (status, payment["status"], payment["amount"]) == (201, "succeeded", 2000), payment

    results = await asyncio.gather(
        *(
            call(
                session,
                (a, b)[i % 2],
                "POST",
                f"/api/v1/orders/{order['id']}/refunds",
                token=staff,
                json={"amount": 300, "reason": "race"},
            )
            for i in range(20)
        )
    )

    succeeded = [body for status, body, _ in results if status == 201]
    refunded = sum(r["amount"] for body in succeeded for r in body["refunds"])
    assert refunded <= 2000
    assert (len(succeeded), refunded) == (6, 1800)  # each 300; a seventh would be 2100
    for status, body, _ in results:
        if status != 201:
            assert_error(status, body, 422, "refund_exceeds_captured")
            assert body["error"]["details"]["refundable"] in range(200, 2000, 300)
    async with database(pair.url) as conn:
        assert await conn.fetchval("SELECT sum(amount) FROM refunds WHERE status = 'succeeded'") == 1800
        assert await conn.fetchval("SELECT count(*) FROM refunds") == 6
        assert await conn.fetchval("SELECT amount_refunded FROM orders WHERE id = $1", order["id"]) == 1800
    for server in (a, b):
        status, got, _ = await call(session, server, "GET", f"/api/v1/orders/{order['id']}", token=staff)
        assert (got["status"], got["amount_paid"], got["amount_refunded"]) == ("partially_refunded", 2000, 1800)


# (c): an instance killed during writes.
async def test_an_instance_killed_during_writes_loses_and_doubles_nothing(
    pair: Instances, session: aiohttp.ClientSession
) -> None:
    """Clients place orders and record manual payments through both instances (every
    request with an Idempotency-Key); one instance is killed with SIGKILL at a random
    moment, its clients' unanswered requests wait, and it is started again; they are then
    sent again with their keys. Three times, the instance killed alternating. The checks
    are tests/crash/crash.py's: every acknowledged order and payment is in the store, with
    its lines; stock + reserved = the starting stock; nothing was applied twice."""
    rng = random.Random(11)
    servers = pair.servers
    ledger = crash.Ledger()
    pair.tillbox("users", "create", "--email", "buyer@crash.test", "--password-stdin", stdin=crash.PASSWORD)
    pair.tillbox(
        "users", "create", "--email", "staff@crash.test", "--role", "staff", "--password-stdin", stdin=crash.PASSWORD
    )
    products = []
    staff = await crash.login(session, servers[0].base, "staff@crash.test")
    for n in range(crash.PRODUCTS):
        status, body = await crash.post(
            session,
            servers[n % 2].base + "/api/v1/products",
            staff,
            f"p{n}",
            {"sku": f"CRASH-{n}", "name": f"Crash {n}", "price": 100 + n, "stock": crash.STOCK},
        )
        assert status == 201, body
        products.append(body["id"])

    for cycle in range(3):
        victim = cycle % 2
        staff = await crash.login(session, servers[0].base, "staff@crash.test")
        buyer = await crash.login(session, servers[1].base, "buyer@crash.test")
        await crash.retry_pending(session, servers[1 - victim].base, ledger)
        stop = asyncio.Event()
        clients = [
            asyncio.create_task(crash.client(session, servers[n % 2].base, buyer, staff, products, ledger, stop, rng))
            for n in range(8)
        ]
        kill_after = ledger.answered + rng.randint(20, 80)
        await until_async(crash.answered(ledger, kill_after), timeout=120, what=f"{kill_after} answers")
        servers[victim].kill()  # SIGKILL: no cleanup, no graceful anything
        # The other instance goes on serving its clients meanwhile.
        go_on = ledger.answered + 20
        await until_async(crash.answered(ledger, go_on), timeout=120, what=f"{go_on} answers after the kill")
        stop.set()
        await asyncio.gather(*clients)
        await asyncio.to_thread(pair.start, victim)

    await crash.retry_pending(session, servers[0].base, ledger)
    assert ledger.pending == []
    assert len(ledger.orders) > 50 and ledger.payments  # the clients did work in every cycle
    assert await crash.verify(pair.url, ledger, products) == []


# (d): the database restarted, or the instances' connections cut, under load.
class OrderLoad:
    """Customers placing orders through both instances, six at once, until stopped; every
    answer kept. ``check()``: what was answered and what the store holds agree."""

    STOCK = 100_000

    def __init__(self, pair: Instances, session: aiohttp.ClientSession):
        self.pair = pair
        self.session = session
        self.answers: list[tuple[int, Any]] = []
        self._stop = asyncio.Event()
        self._clients: list[asyncio.Task[None]] = []
        self.products: list[dict[str, Any]] = []

    async def start(self) -> None:
        a, b = self.pair.servers
        staff = await login(self.session, a, "staff@scale.test")
        self._buyers = [await customer(self.session, s, f"buyer{n}@scale.test") for n, s in enumerate((a, b))]
        for n in range(4):
            self.products.append(
                await product(
                    self.session, a, staff, sku=f"LOAD-{n}", name=f"Load {n}", price=100 + n, stock=self.STOCK
                )
            )
        self._clients = [asyncio.create_task(self._place_orders(n)) for n in range(6)]

    async def _place_orders(self, n: int) -> None:
        rng = random.Random(n)
        server, token = self.pair.servers[n % 2], self._buyers[n % 2]
        while not self._stop.is_set():
            items = [{"product_id": p["id"], "quantity": rng.randint(1, 3)} for p in rng.sample(self.products, 2)]
            status, body, _ = await call(
                self.session, server, "POST", "/api/v1/orders", token=token, json={"items": items}
            )
            self.answers.append((status, body))

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._clients)

    def created(self, since: int = 0) -> collections.Counter[str]:
        """Orders created since answer ``since``, by customer (one per instance)."""
        return collections.Counter(body["customer_id"] for status, body in self.answers[since:] if status == 201)

    async def until_created_through_both(self, count: int, what: str) -> None:
        since = len(self.answers)

        async def done() -> bool:
            created = self.created(since)
            return len(created) == 2 and min(created.values()) >= count

        await until_async(done, timeout=DEADLINE, what=what)

    async def until_ready(self) -> None:
        for server in self.pair.servers:

            async def ready(server: Server = server) -> bool:
                status, _, _ = await call(self.session, server, "GET", "/readyz")
                return status == 200

            await until_async(ready, timeout=DEADLINE, what=f"{server.base}/readyz answering 200 again")

    async def check(self) -> None:
        """Every answer is a 201 or a 503 in the envelope (the database away, a commit whose
        outcome is not known, or a conflict with the other clients' writes to the same stock
        that outlasted its retries while connections were being cut: each says try again);
        every order answered 201 is stored with its lines;
        no order is stored without lines; stock + what the orders took = the starting stock."""
        for status, body in self.answers:
            if status != 201:
                assert status == 503, (body, self.pair.logged(body["error"]["request_id"]))
                assert_error(status, body, 503)
                assert body["error"]["code"] in ("database_unavailable", "commit_failed", "database_busy"), body
        acknowledged = {body["id"]: body for status, body in self.answers if status == 201}
        async with database(self.pair.url) as conn:
            stored = {row[0] for row in await conn.fetch("SELECT id FROM orders")}
            assert set(acknowledged) <= stored
            lineless = "SELECT id FROM orders o WHERE NOT EXISTS (SELECT 1 FROM order_lines l WHERE l.order_id = o.id)"
            assert await conn.fetch(lineless) == []
            for p in self.products:
                stock = await conn.fetchval("SELECT stock FROM products WHERE id = $1", p["id"])
                taken = await conn.fetchval("SELECT sum(quantity) FROM order_lines WHERE product_id = $1", p["id"])
                assert stock + (taken or 0) == self.STOCK, p["sku"]
            for order_id, order in acknowledged.items():
                lines = await conn.fetch("SELECT product_id, quantity FROM order_lines WHERE order_id = $1", order_id)
                told = sorted((item["product_id"], item["quantity"]) for item in order["items"])
                assert sorted(tuple(row) for row in lines) == told


def _cluster(url: str) -> tuple[str, str]:
    """The version and name of the PostgreSQL cluster at ``url`` (Debian: "15/main"), for
    pg_ctlcluster; skips unless it runs on this machine and this user may restart it."""
    if URL(url).host not in ("127.0.0.1", "localhost", "::1"):
        pytest.skip("the PostgreSQL server is not this machine's")
    if shutil.which("pg_ctlcluster") is None:
        pytest.skip("no pg_ctlcluster on this machine")
    if os.geteuid() != 0:
        pytest.skip("restarting the PostgreSQL server takes root")

    async def name() -> str:
        async with database(url) as conn:
            return str(await conn.fetchval("SHOW cluster_name"))

    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        version, _, cluster = thread.submit(asyncio.run, name()).result().partition("/")
    if not (version and cluster):
        pytest.skip("the PostgreSQL server names no Debian cluster (cluster_name)")
    return version, cluster


@pytest.mark.restarts_postgres
async def test_the_database_restarted_under_load_costs_503s_and_nothing_half_written(
    pair: Instances, session: aiohttp.ClientSession
) -> None:
    """RESTARTS THE MACHINE'S POSTGRESQL SERVER (pg_ctlcluster ... restart) while orders are
    placed through both instances: any other test run using that server at the same time
    loses its connections. pytest runs tests one after the other (no xdist), so within one
    run nothing else uses the server meanwhile; where other runs share it, deselect this
    test (-m "not restarts_postgres").

    Requests in flight are answered 503 in the envelope, or succeed; nothing is half-written
    (OrderLoad.check); both instances come back by themselves (/readyz 200 again) and take
    orders again."""
    version, cluster = _cluster(pair.url)
    load = OrderLoad(pair, session)
    await load.start()
    try:
        await load.until_created_through_both(5, "orders before the restart")
        restart = await asyncio.to_thread(
            subprocess.run,
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, cluster, "restart"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert restart.returncode == 0, restart.stderr
        await load.until_ready()
        await load.until_created_through_both(10, "orders after the restart")
    finally:
        await load.stop()
    await load.check()


async def test_connections_cut_by_the_server_under_load_cost_503s_and_nothing_half_written(
    pair: Instances, session: aiohttp.ClientSession
) -> None:
    """What a restart does to the instances, without restarting the server: three times,
    the server ends every backend of the instances (pg_terminate_backend, as at a shutdown:
    FATAL "terminating connection due to administrator command", on busy and idle
    connections and the watch connections alike) while they take orders. The same checks as
    the restart's."""
    load = OrderLoad(pair, session)
    await load.start()
    try:
        async with database(pair.url) as conn:
            for n in range(1, 4):
                await load.until_created_through_both(5, f"orders before cut {n}")
                cut = await conn.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
                )
                assert cut >= 2  # at least each instance's watch connection
                await load.until_ready()
        await load.until_created_through_both(10, "orders after the last cut")
    finally:
        await load.stop()
    await load.check()


# (e): every connection of the pool taken.
async def test_a_pool_with_every_connection_taken_answers_503_with_retry_after_instead_of_hanging(
    tmp_path: Path, postgres_url: str, session: aiohttp.ClientSession
) -> None:
    """One connection in the pool, held by a read that waits behind a table lock taken
    from a connection of the test's own (up to its read budget, 30 s): another request
    then waits for a connection at most busy_timeout_ms and is answered 503
    `database_busy` with Retry-After while the first is still waiting. Once the lock goes,
    the first is answered and the instance serves again."""
    settings = {
        "TILLBOX_DATABASE_POOL_MIN": "1",
        "TILLBOX_DATABASE_POOL_MAX": "1",
        "TILLBOX_DATABASE_BUSY_TIMEOUT_MS": "200",
        "TILLBOX_DATABASE_READ_BUDGET_MS": "30000",
    }
    with instances(tmp_path, postgres_url, count=1, **settings) as running:
        [server] = running.servers
        staff = await login(session, server, "staff@scale.test")
        mug = await product(session, server, staff, sku="MUG-1", name="Blue mug", price=1250, stock=10)
        async with database(postgres_url) as blocker:
            transaction = blocker.transaction()
            await transaction.start()
            await blocker.execute("LOCK TABLE products IN ACCESS EXCLUSIVE MODE")
            path = f"/api/v1/products/{mug['id']}"
            holding = asyncio.create_task(call(session, server, "GET", path))

            async def waiting_for_the_lock() -> bool:
                nonlocal holding
                if holding.done():
                    # It found the one connection taken by the server's own housekeeping, and
                    # was answered 503 database_busy itself: send it again.
                    status, body, _ = holding.result()
                    assert_error(status, body, 503, "database_busy")
                    holding = asyncio.create_task(call(session, server, "GET", path))
                return bool(
                    await blocker.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event_type = 'Lock' AND query LIKE '%FROM products%'"
                    )
                )

            await until_async(waiting_for_the_lock, timeout=DEADLINE, what="the read waiting for the lock")
            status, body, headers = await call(session, server, "GET", "/api/v1/products")
            assert_error(status, body, 503, "database_busy")
            assert int(headers["Retry-After"]) >= 1
            assert not holding.done()  # answered while the one connection was still taken
            status, health, _ = await call(session, server, "GET", "/healthz")
            assert status == 200 and health == {"status": "ok"}  # the server itself never stopped answering
            await transaction.rollback()
        status, got, _ = await holding
        assert (status, got["stock"]) == (200, 10)
        status, page, _ = await call(session, server, "GET", "/api/v1/products")
        assert status == 200 and [p["sku"] for p in page["data"]] == ["MUG-1"]


# (f): cached pages, invalidated across instances.
async def test_a_change_through_one_instance_is_seen_in_the_others_cached_catalog_within_100_ms(
    pair: Instances, session: aiohttp.ClientSession
) -> None:
    a, b = pair.servers
    staff = await login(session, a, "staff@scale.test")
    mug = await product(session, a, staff, sku="MUG-1", name="Blue mug", price=1250, stock=10)
    paths = ("/api/v1/products", f"/api/v1/products/{mug['id']}")

    async def read(path: str) -> tuple[int, Any, str]:
        status, body, headers = await call(session, b, "GET", path)
        assert status == 200, body
        return status, body, headers["ETag"]

    # B has both rendered and cached (the same tag twice: served from its cache).
    for path in paths:
        _, _, tag = await read(path)
        _, _, again = await read(path)
        assert again == tag

    for change in ({"price": 1300}, {"name": "Red mug"}, {"description": "Bigger"}):
        status, changed, _ = await call(session, a, "PATCH", f"/api/v1/products/{mug['id']}", token=staff, json=change)
        assert status == 200, changed
        deadline = time.monotonic() + CHANGE_LATENCY
        ((field, value),) = change.items()

        async def seen(field: str = field, value: Any = value) -> bool:
            _, listed, _ = await read(paths[0])
            _, one, _ = await read(paths[1])
            return [p[field] for p in listed["data"]] == [value] and one[field] == value

        while not await seen():
            assert time.monotonic() < deadline, f"{change} not seen on the other instance within {CHANGE_LATENCY} s"

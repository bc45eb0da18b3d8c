"""`make bench`: Tillbox on SQLite and on PostgreSQL against a bare aiohttp endpoint, on this
machine, in one run, under the same load.

    .venv/bin/python bench/run.py [--duration 10] [--connections 64] [--quick] [--load auto|wrk|python]
                                  [--stores sqlite,postgres] [--postgres URL]
                                  [--large] [--large-products 1000000] [--large-orders 1000000]

Each store is seeded (`tillbox db seed`) with a catalog of 1,000 products in a temporary
data directory, or, for PostgreSQL, in a database of its own on the server at --postgres
(default $TILLBOX_BENCH_POSTGRES_URL, else postgresql://postgres@127.0.0.1:5432/test),
created for the run and dropped after it. `tillbox serve` runs on it (tests/harness.py):
one instance on SQLite, two on PostgreSQL (the same data directory and database.url,
each on the free port it binds itself), beside bench/bare.py. wrk drives them
(bench/loadgen.py when wrk is not on PATH), and the harness prints req/s, p50 and p99 per
scenario with the ratio to the bare endpoint, then a verdict per target;
bench/results/latest.json gets the same. Only ratios travel between machines: the bare
endpoint is measured before and after the Tillbox scenarios, and their mean is the
denominator, so that drift (heat, noisy neighbours) shows instead of hiding.

Scenarios, each after a discarded warm-up: the bare endpoint; on SQLite, GET
/api/v1/products?limit=20 and GET /api/v1/users/me with a customer's token (and with an
admin's personal API key), a text search
(GET /products?q=walnut+lamp), POST /api/v1/auth/login (argon2id, slow on purpose), the
catalog list again while 4 connections keep logging in, GET /api/v1/orders/{id} (the
customer's own order), POST /api/v1/orders (two lines, each request with an
Idempotency-Key of its own, over two products with a stock (10^9) that no run can
exhaust); on PostgreSQL the catalog list, the search, the order read, and the orders once
on one instance and once on both (the connections split between them, one load generator
each); the bare endpoint again. Every status is counted (bench/wrk.lua) and non-2xx
answers are flagged loudly (for orders, any answer but 201). After the run, the orders in
each store are counted against the 201s: the servers' (their access logs) must match
exactly, the client's within the requests wrk hung up on at its deadline.

--large adds a store of each kind seeded with --large-products products and
--large-orders orders (a million each by default: `tillbox db seed` takes minutes per
store; both seed at once) and measures on it the catalog list, the search, the order read
and order placement, reported beside the same scenarios on the 1,000-product store.

Exit status: 0 whatever the figures (a benchmark reports, it does not assert); 1 when the
harness itself fails (a server would not start or died, wrk printed nothing useful, the
PostgreSQL server cannot be reached); 130 on Ctrl-C. Every server is stopped, every
database the run created dropped and the temporary directory removed in every case.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import resource
import secrets
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from drivers import BENCH, Generator, HarnessError, Load, Measurement, Processes, choose_load_generator, drive
from yarl import URL

REPO = BENCH.parent
sys.path.insert(0, str(REPO))  # for tests.harness: the one helper that starts `tillbox serve`

from tests.harness import Server, ServerFailed  # noqa: E402

RESULTS = BENCH / "results" / "latest.json"
WARMUP_SECONDS = 2
LOGIN_STREAM_CONNECTIONS = 4  # scenario e: a trickle of logins beside the catalog load
SEED_PRODUCTS = 1000
#: The small stores' orders: as many as the order reads below draw from on the large ones.
SEED_ORDERS = 20_000
#: Reads that miss Tillbox's page cache (it keeps 10,000 pages, each per store version):
#: searches of two words of the demo catalog, each with a page size of 10 to 100 (some
#: 74,000 distinct pages), and staff reading this many of the store's orders at random.
MISS_ORDERS = 20_000
CUSTOMER_EMAIL = "customer@bench.example"
STAFF_EMAIL = "staff@bench.example"
ADMIN_EMAIL = "admin@bench.example"
ORDER_STOCK = 1_000_000_000  # the most a product may hold: no run of the orders scenario can exhaust it
ORDER_PRODUCTS = (("BENCH-ORDER-1", "Bench mug", 1299), ("BENCH-ORDER-2", "Bench tea towel", 850))
#: PostgreSQL's orders are measured twice: every order of the same two products (as on
#: SQLite: their two rows are locked by one order after another), and each order of two of
#: this many products, as a shop's orders spread over its catalog.
SPREAD_PRODUCTS = 1000
SPREAD_BODIES = 20_000
SEARCH = "walnut lamp"  # two words: about 1 product in 380 of the demo catalog has both
DEFAULT_POSTGRES = os.environ.get("TILLBOX_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
POSTGRES_INSTANCES = 2
SEED_TIMEOUT = 3 * 3600  # seconds: a million products and a million orders take minutes, not hours


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def http(method: str, url: str, body: dict[str, Any] | None = None, token: str | None = None) -> tuple[int, bytes]:
    """One request with the standard library: the harness's own calls need no event loop."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310 - our own http://
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def first_line(child: subprocess.Popen[Any], log: Path, name: str, timeout: float = 30.0) -> str:
    """The first line a child prints on its standard output (a pipe), within ``timeout``."""
    assert child.stdout is not None
    ready, _, _ = select.select([child.stdout], [], [], timeout)
    line = child.stdout.readline().strip() if ready else ""
    if not line:
        raise HarnessError(f"{name} printed nothing in {timeout:.0f} s (status {child.poll()}):\n{tail(log)}")
    return str(line)


def wait_ready(url: str, child: subprocess.Popen[Any], log: Path, name: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise HarnessError(f"{name} exited with status {child.returncode} before it was ready:\n{tail(log)}")
        try:
            if http("GET", url)[0] == 200:
                return
        except OSError:
            pass  # not listening yet
        time.sleep(0.1)
    raise HarnessError(f"{name} was not ready at {url} after {timeout:.0f} s:\n{tail(log)}")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process, all threads (the argon2 pool and the commit thread
    included); None where /proc cannot say."""
    try:
        # Fields after the parenthesised command name: state is the 3rd field, utime the 14th.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def machine_busy_seconds() -> float | None:
    """CPU time the whole machine spent busy, all CPUs; None where /proc cannot say."""
    try:
        user, nice, system, _idle, _iowait, irq, softirq, steal = Path("/proc/stat").read_text().split()[1:9]
    except (OSError, ValueError):
        return None
    return sum(int(n) for n in (user, nice, system, irq, softirq, steal)) / os.sysconf("SC_CLK_TCK")


def children_seconds() -> float:
    """CPU of the harness's finished children: the load generators, once drive() has reaped them."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def postgres_seconds() -> float | None:
    """CPU of every PostgreSQL server process on this machine (its backends, the writer, the
    WAL writer...), whichever database they serve; None where /proc cannot say."""
    total = 0.0
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            if Path(f"/proc/{entry}/comm").read_text().strip() != "postgres":
                continue
        except OSError:
            continue  # gone meanwhile
        seconds = cpu_seconds(int(entry))
        if seconds is not None:
            total += seconds
    return total


@dataclass
class CpuUse:
    """Where the machine's CPU went during one measurement, in cores."""

    server: float  # the Tillbox servers measured, all their threads
    load_generator: float
    others: float  # everything else: another engineer's tests, a backup, a browser
    database: float = 0.0  # PostgreSQL's processes, where the store is PostgreSQL (else 0: in the server)


class CpuMeter:
    """Measures the servers, PostgreSQL, the load generators and everyone else over one
    measurement: on a shared 2-CPU machine a figure means little without knowing who else
    was running."""

    def __init__(self, server_pids: list[int], database: bool = False) -> None:
        self._pids = server_pids
        self._database = database
        self._start = self._sample()

    def _sample(self) -> tuple[float, float | None, float, float | None, float | None]:
        servers = [cpu_seconds(pid) for pid in self._pids]
        server = None if None in servers else sum(s for s in servers if s is not None)
        database = postgres_seconds() if self._database else 0.0
        return time.monotonic(), server, children_seconds(), machine_busy_seconds(), database

    def stop(self) -> CpuUse | None:
        (t0, server0, children0, busy0, db0), (t1, server1, children1, busy1, db1) = self._start, self._sample()
        if server0 is None or server1 is None or busy0 is None or busy1 is None or db0 is None or db1 is None:
            return None
        elapsed = t1 - t0
        server, generator = (server1 - server0) / elapsed, (children1 - children0) / elapsed
        database = (db1 - db0) / elapsed
        others = max(0.0, (busy1 - busy0) / elapsed - server - generator - database)
        return CpuUse(server, generator, others, database)


def maps_uvloop(pid: int) -> bool | None:
    """Whether a process has uvloop's extension mapped; None where /proc cannot say."""
    try:
        return "uvloop" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return None


def commit_of_tree() -> str:
    """What was measured: the code moves quickly, a figure without its commit is an anecdote."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True
        )
    except OSError:
        return "unknown (no git)"
    if head.returncode != 0:
        return "unknown (not a git checkout)"
    return head.stdout.strip() + (" + uncommitted changes" if dirty.stdout.strip() else "")


# The stores and the servers under test.
async def _postgres(url: str, sql: str) -> Any:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def postgres(url: str, sql: str) -> Any:
    """One statement on a PostgreSQL server, from the harness's synchronous code."""
    try:
        return asyncio.run(_postgres(url, sql))
    except (OSError, TimeoutError, asyncpg.PostgresError) as e:
        raise HarnessError(f"PostgreSQL at {URL(url).host}:{URL(url).port}: {type(e).__name__}: {e}") from None


@dataclass
class Store:
    """One store seeded for the run: SQLite in a data directory, or a PostgreSQL database."""

    kind: str  # "sqlite" or "postgres"
    key: str  # prefix of its rows' keys: "sqlite", "postgres", "sqlite_large", "postgres_large"
    label: str  # prefix of its rows' labels
    workdir: Path  # the servers' working directory; its tillbox-data is their data directory
    products: int
    orders: int
    url: str | None = None  # PostgreSQL: the database's URL
    seed_seconds: float | None = None

    @property
    def env(self) -> dict[str, str]:
        return {"TILLBOX_DATABASE_URL": self.url} if self.url else {}

    def count_orders(self) -> int:
        """Orders in the store, read as an outsider would (another connection)."""
        if self.url:
            return int(postgres(self.url, "SELECT count(*) FROM orders"))
        database = self.workdir / "tillbox-data" / "tillbox.db"
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)) as db:
            return int(db.execute("SELECT count(*) FROM orders").fetchone()[0])


@dataclass
class Deployment:
    """The servers of one store: one instance, or (PostgreSQL) several sharing the store and
    the data directory (signing keys), each with its access log."""

    store: Store
    servers: list[Server]
    access_logs: list[Path]
    customer_password: str
    staff_password: str
    api_key: str = ""  # an admin's personal API key (users:read), for GET /users/me
    order_body: str = ""  # the orders scenario's request body: two lines, by product id
    spread_bodies: Path | None = None  # bodies of orders of two of SPREAD_PRODUCTS products, one a line
    search_paths: Path | None = None  # searches that miss the page cache, one a line
    order_paths: Path | None = None  # orders of the store, one a line, for staff to read
    order_id: str = ""  # the customer's own order, for GET /orders/{id}
    orders_before: int = 0  # orders in the store before its first orders scenario's warm-up
    orders_after: int = 0  # and after its last, once every request left in flight was answered

    @property
    def base(self) -> str:
        return self.servers[0].base

    @property
    def pids(self) -> list[int]:
        return [server.process.pid for server in self.servers]

    def log_in(self, email: str = CUSTOMER_EMAIL, password: str | None = None) -> str:
        """A fresh access token (the customer's by default), from the first instance: every
        instance accepts it. It also drains that instance: the argon2 pool is a FIFO queue,
        so this login is answered only after every hash that earlier load left queued (wrk
        hangs up at its deadline; the server still computes what it was asked)."""
        body = {"email": email, "password": password or self.customer_password}
        status, answer = http("POST", f"{self.base}/api/v1/auth/login", body)
        if status != 200:
            raise HarnessError(f"{self.store.label}: login of {email} answered {status}: {answer[:300]!r}")
        return str(json.loads(answer)["access_token"])

    def prepare_orders(self) -> None:
        """Through the API, as a client would: staff create the two products the orders
        scenario buys, each with a stock no run can exhaust; the customer places one order,
        the one GET /orders/{id} reads."""
        staff = self.log_in(STAFF_EMAIL, self.staff_password)
        ids = []
        for sku, name, price in ORDER_PRODUCTS:
            product = {"sku": sku, "name": name, "price": price, "stock": ORDER_STOCK}
            status, answer = http("POST", f"{self.base}/api/v1/products", product, staff)
            if status != 201:
                raise HarnessError(f"{self.store.label}: creating product {sku} answered {status}: {answer[:300]!r}")
            ids.append(json.loads(answer)["id"])
        order = {"items": [{"product_id": product_id, "quantity": 1} for product_id in ids]}
        self.order_body = json.dumps(order, separators=(",", ":"))
        if self.store.key == "postgres":
            self.prepare_spread_orders(staff)
        status, answer = http("POST", f"{self.base}/api/v1/orders", order, self.log_in())
        if status != 201:
            raise HarnessError(f"{self.store.label}: the customer's first order answered {status}: {answer[:300]!r}")
        self.order_id = str(json.loads(answer)["id"])

    def prepare_spread_orders(self, staff: str) -> None:
        ids = []
        for n in range(1, SPREAD_PRODUCTS + 1):
            sku, name = f"BENCH-SPREAD-{n:04d}", f"Bench item {n}"
            product = {"sku": sku, "name": name, "price": 100 + n, "stock": ORDER_STOCK}
            status, answer = http("POST", f"{self.base}/api/v1/products", product, staff)
            if status != 201:
                raise HarnessError(f"{self.store.label}: creating product {n} answered {status}: {answer[:300]!r}")
            ids.append(json.loads(answer)["id"])
        rng = random.Random(5)  # the same orders in every run
        self.spread_bodies = self.store.workdir / "spread-orders.txt"
        with self.spread_bodies.open("w") as out:
            for _ in range(SPREAD_BODIES):
                items = [{"product_id": product_id, "quantity": 1} for product_id in rng.sample(ids, 2)]
                out.write(json.dumps({"items": items}, separators=(",", ":")) + "\n")


@dataclass
class Bench:
    bare: str  # base URL
    bare_process: subprocess.Popen[Any]
    bare_banner: str  # what bench/bare.py says it runs on
    deployments: list[Deployment] = field(default_factory=list)


def tillbox_command() -> Path:
    tillbox = Path(sys.executable).with_name("tillbox")
    if not tillbox.exists():
        found = shutil.which("tillbox")
        if found is None:
            raise HarnessError("no tillbox command beside this Python or on PATH; run `make bench`")
        tillbox = Path(found)
    return tillbox


def store_environment(store: Store) -> dict[str, str]:
    # The caller's other TILLBOX_* settings pass through on purpose (to bench a setting);
    # the header lists them. The working directory is the store's own, so the repository's
    # config.toml is not read: built-in defaults unless the caller says otherwise.
    env = {name: value for name, value in os.environ.items() if name != "TILLBOX_DATABASE_URL"}
    return env | {"TILLBOX_SERVER_HOST": "127.0.0.1"} | store.env


def cli(store: Store, *argv: str, stdin: str | None = None, timeout: float = 300) -> str:
    done = subprocess.run(
        [str(tillbox_command()), *argv],
        input=stdin,
        env=store_environment(store),
        cwd=store.workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise HarnessError(f"{store.label}: `tillbox {' '.join(argv)}` failed:\n{done.stderr or done.stdout}")
    return done.stdout


def seed(stores: list[Store]) -> None:
    """`tillbox db seed` for every store at once (the large ones take minutes each)."""
    children = []
    for store in stores:
        store.workdir.mkdir(parents=True)
        argv = [str(tillbox_command()), "db", "seed", "--count", str(store.products), "--orders", str(store.orders)]
        out = (store.workdir / "seed.log").open("wb")
        child = subprocess.Popen(argv, env=store_environment(store), cwd=store.workdir, stdout=out, stderr=out)
        children.append((store, child, out, time.monotonic()))
    try:
        # Polled, so that each store's time is its own (they run side by side).
        deadline = time.monotonic() + SEED_TIMEOUT
        running = list(children)
        while running:
            for entry in list(running):
                store, child, out, started = entry
                code = child.poll()
                if code is None:
                    continue
                running.remove(entry)
                out.close()
                if code != 0:
                    raise HarnessError(f"{store.label}: `tillbox db seed` failed:\n{tail(store.workdir / 'seed.log')}")
                store.seed_seconds = time.monotonic() - started
            if running and time.monotonic() > deadline:
                raise HarnessError(f"`tillbox db seed` took more than {SEED_TIMEOUT} s")
            time.sleep(0.2)
    finally:
        for _, child, out, _ in children:
            if child.poll() is None:
                child.kill()
                child.wait()
            out.close()


def start_deployment(store: Store, processes: Processes, instances: int) -> Deployment:
    passwords = {role: secrets.token_urlsafe(24) for role in ("staff", "customer")}
    for role, email in (("staff", STAFF_EMAIL), ("customer", CUSTOMER_EMAIL)):
        cli(
            store, "users", "create", "--email", email, "--role", role, "--password-stdin", stdin=passwords[role] + "\n"
        )
    # A personal API key of an admin: GET /users/me with it beside the same with an access
    # token is what a key costs (one indexed read of the key and one of its owner a request).
    cli(
        store, "users", "create", "--email", ADMIN_EMAIL, "--role", "admin", "--password-stdin",
        stdin=secrets.token_urlsafe(24) + "\n",
    )  # fmt: skip
    created = cli(
        store, "keys", "api", "create", "--user", ADMIN_EMAIL, "--name", "bench", "--scope", "users:read",
        "--expires-in", "1", "--json",
    )  # fmt: skip
    api_key = str(json.loads(created)["secret"])
    servers, logs = [], []
    for n in range(instances):
        # Access log on (the default), into a file: a terminal would be the bottleneck.
        log = store.workdir / f"access-{n + 1}.log"
        with log.open("wb") as out:
            try:
                server = Server(
                    store.workdir, command=[str(tillbox_command())], env=store_environment(store), stdout=out
                )
            except ServerFailed as e:
                raise HarnessError(f"{store.label}: tillbox serve: {e}") from None
        processes.adopt(server.process)
        servers.append(server)
        logs.append(log)
    deployment = Deployment(store, servers, logs, passwords["customer"], passwords["staff"], api_key=api_key)
    deployment.prepare_orders()
    prepare_misses(deployment)
    return deployment


def prepare_misses(deployment: Deployment) -> None:
    from entrypoints.demo import _ADJECTIVES, _MATERIALS, _THINGS

    rng = random.Random(3)
    pairs = [f"{a} {b}" for a in _MATERIALS + _ADJECTIVES for b in _THINGS]
    pages = [urllib.parse.urlencode({"q": pair.lower(), "limit": n}) for pair in pairs for n in range(10, 101)]
    rng.shuffle(pages)
    deployment.search_paths = deployment.store.workdir / "searches.txt"
    deployment.search_paths.write_text("".join(f"/api/v1/products?{page}\n" for page in pages))
    sql = f"SELECT id FROM orders ORDER BY random() LIMIT {MISS_ORDERS}"
    store = deployment.store
    if store.url:
        ids = asyncio.run(_fetch_ids(store.url, sql))
    else:
        database = store.workdir / "tillbox-data" / "tillbox.db"
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)) as db:
            ids = [row[0] for row in db.execute(sql)]
    deployment.order_paths = store.workdir / "orders.txt"
    deployment.order_paths.write_text("".join(f"/api/v1/orders/{order_id}\n" for order_id in ids))


async def _fetch_ids(url: str, sql: str) -> list[str]:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return [row[0] for row in await conn.fetch(sql)]
    finally:
        await conn.close()


def prepare_and_start(tmp: Path, processes: Processes, args: argparse.Namespace) -> Bench:
    stores: list[Store] = []
    for kind in args.stores:
        sizes = [("", "", SEED_PRODUCTS, SEED_ORDERS)]
        if args.large:
            sizes.append(("_large", ", large", args.large_products, args.large_orders))
        for suffix, label_suffix, products, orders in sizes:
            name = {"sqlite": "SQLite", "postgres": "PostgreSQL"}[kind]
            store = Store(kind, f"{kind}{suffix}", f"{name}{label_suffix}", tmp / f"{kind}{suffix}", products, orders)
            if kind == "postgres":
                database = database_name(suffix)
                postgres(args.postgres, f'CREATE DATABASE "{database}"')
                store.url = str(URL(args.postgres).with_path(f"/{database}"))
            stores.append(store)
    seed(stores)
    deployments = []
    for store in stores:
        instances = POSTGRES_INSTANCES if store.key == "postgres" else 1
        deployments.append(start_deployment(store, processes, instances))
    with (tmp / "bare.log").open("wb") as err:
        bare = processes.start(
            [sys.executable, str(BENCH / "bare.py"), "--port=0"], cwd=tmp, stdout=subprocess.PIPE, stderr=err, text=True
        )
    bare_url, _, bare_banner = first_line(bare, tmp / "bare.log", "bench/bare.py").partition(" ")
    wait_ready(f"{bare_url}/", bare, tmp / "bare.log", "bench/bare.py")
    return Bench(bare_url, bare, bare_banner, deployments)


def database_name(suffix: str) -> str:
    return f"tillbox_bench_{os.getpid()}{suffix}"


def drop_databases(server_url: str, names: list[str]) -> None:
    """Drop them, again for a few seconds if need be: a backend whose client was killed in the
    middle of an import may take a moment to go."""
    for name in names:
        for attempt in range(10):
            try:
                postgres(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                break
            except HarnessError as e:
                if attempt == 9:
                    print(f"bench: could not drop database {name}: {e}", file=sys.stderr)
                time.sleep(1)


# Scenarios, rows and targets.
@dataclass
class Row:
    key: str
    label: str
    connections: int
    measurement: Measurement
    cpu: CpuUse | None  # the whole scenario's, shared by its streams
    # Tillbox's CPU per request (and PostgreSQL's, for a PostgreSQL store), where the
    # scenario's streams all measure the same endpoint.
    cpu_us_per_request: float | None
    ratio: float | None = None  # of the bare endpoint's mean req/s
    # The bare endpoint's CPU per request over this one's: the same as `ratio` when both
    # servers had a full core, and still right when other processes took part of it.
    cpu_ratio: float | None = None
    expect: str | None = None  # the one status every answer must have (orders: "201"); None: any 2xx
    warmup: Measurement | None = None  # the discarded warm-up's, for the orders count
    store: str | None = None  # the store's key; None: the bare endpoint

    @property
    def unexpected(self) -> int:
        """Answers that make the figure not the endpoint's: non-2xx, or anything but `expect`."""
        m = self.measurement
        return m.other_than(self.expect) if self.expect else m.non_2xx

    @property
    def created_per_second(self) -> float:
        """req/s counting only the answers with the expected status (orders: 201s)."""
        m = self.measurement
        good = m.requests - self.unexpected
        return m.requests_per_second * good / m.requests if m.requests else 0.0


def combined(measurements: list[Measurement]) -> Measurement:
    """Streams against several instances of one endpoint as one: requests and statuses
    added, latency percentiles the worst stream's (the true ones lie between)."""
    statuses: dict[str, int] = {}
    errors: dict[str, int] = {}
    for m in measurements:
        for status, count in m.statuses.items():
            statuses[status] = statuses.get(status, 0) + count
        for error, count in m.errors.items():
            errors[error] = errors.get(error, 0) + count
    sent = [m.sent for m in measurements]
    return Measurement(
        requests=sum(m.requests for m in measurements),
        requests_per_second=sum(m.requests_per_second for m in measurements),
        p50_ms=max(m.p50_ms for m in measurements),
        p99_ms=max(m.p99_ms for m in measurements),
        statuses=statuses,
        errors=errors,
        sent=None if None in sent else sum(n for n in sent if n is not None),
    )


@dataclass(frozen=True)
class Target:
    label: str
    row: str
    metric: str  # "ratio", "p99_ms", "per_second" (answers with the expected status per second), "speedup"
    limit: float
    at_least: bool
    over: str | None = None  # "speedup": the row whose created/s this row's is compared with

    def judge(self, rows: dict[str, Row]) -> dict[str, Any] | None:
        row = rows.get(self.row)
        base = rows.get(self.over) if self.over else None
        if row is None or (self.over and base is None):
            return None  # a store left out of this run
        if self.metric == "speedup":
            assert base is not None
            value: float | None = row.created_per_second / base.created_per_second if base.created_per_second else 0.0
        else:
            value = {"ratio": row.ratio, "p99_ms": row.measurement.p99_ms, "per_second": row.created_per_second}[
                self.metric
            ]
        assert value is not None
        met = value >= self.limit if self.at_least else value <= self.limit
        # A fast error is not a fast endpoint: a figure made of non-2xx answers (for orders,
        # anything but 201) meets nothing.
        invalid = row.unexpected > 0 or (base is not None and base.unexpected > 0)
        return {
            "target": self.label,
            "metric": self.metric,
            "value": value,
            "value_by_cpu": row.cpu_ratio if self.metric == "ratio" else None,
            "limit": self.limit,
            "met": met and not invalid,
            "invalid": invalid,
        }


TARGETS = [
    Target("SQLite: catalog list req/s >= 40% of bare", "sqlite.catalog", "ratio", 0.40, at_least=True),
    Target("SQLite: catalog list p99 <= 15 ms", "sqlite.catalog", "p99_ms", 15.0, at_least=False),
    Target("SQLite: users/me req/s >= 50% of bare", "sqlite.me", "ratio", 0.50, at_least=True),
    Target(
        "SQLite: catalog p99 <= 50 ms during logins", "sqlite.catalog_during_logins", "p99_ms", 50.0, at_least=False
    ),
    Target("SQLite: GET /orders/{id} req/s >= 30% of bare", "sqlite.order", "ratio", 0.30, at_least=True),
    Target("SQLite: orders/s >= 2,000, synchronous=FULL", "sqlite.orders", "per_second", 2000.0, at_least=True),
    Target("PostgreSQL: catalog list req/s >= 40% of bare", "postgres.catalog", "ratio", 0.40, at_least=True),
    Target("PostgreSQL: GET /orders/{id} req/s >= 30% of bare", "postgres.order", "ratio", 0.30, at_least=True),
    # Orders over the catalog, as a shop's are; the same two products in every order are a
    # flash sale, whose rows one order after another locks (reported, not a target).
    Target(
        "PostgreSQL: orders/s, 2 instances >= 2,000", "postgres.orders_spread_2", "per_second", 2000.0, at_least=True
    ),
    Target(
        "PostgreSQL: orders/s, 2 instances >= 1.5x one",
        "postgres.orders_spread_2",
        "speedup",
        1.5,
        at_least=True,
        over="postgres.orders_spread",
    ),
]
#: The scenarios measured on the large stores too, and compared with the small ones.
LARGE_SCENARIOS = ("catalog", "search", "search_misses", "order", "order_misses", "orders")


def run_scenarios(
    generator: Generator, processes: Processes, bench: Bench, conns: int, seconds: int, only: list[str]
) -> list[Row]:
    """Every scenario, or those whose key (after the store's prefix) is in ``only``."""
    rows: list[Row] = []

    def scenario(
        streams: list[tuple[str, str]],
        make_loads: Callable[[str], list[Load]],
        pids: list[int],
        *,
        deployment: Deployment | None = None,
        expect: str | None = None,
        combine: bool = False,
    ) -> None:
        """``streams``: (key, label) per row. ``combine``: the loads are one endpoint on
        several instances, reported as one row (the first stream's key and label)."""
        if only and deployment and streams[0][0].partition(".")[2] not in only:
            return
        # A fresh token per scenario, so that a long --duration never outlives the 15-minute
        # access token; the login also waits out whatever the previous scenario left queued.
        token = deployment.log_in() if deployment else ""
        loads = make_loads(token)
        # Warm-up, discarded: connections, the page caches, allocator arenas, lazy imports.
        warmups = drive(generator, processes, loads, WARMUP_SECONDS)
        if deployment:
            deployment.log_in()  # the warm-up's leftover logins must not be billed to the measurement
        meter = CpuMeter(pids, database=deployment is not None and deployment.store.kind == "postgres")
        measurements = drive(generator, processes, loads, seconds)
        cpu = meter.stop()
        servers = deployment.servers if deployment else []
        for server in servers:
            if server.process.poll() is not None:
                raise HarnessError(f"{streams[0][1]}: a server died (status {server.process.returncode})")
        if bench.bare_process.poll() is not None:
            raise HarnessError("the bare endpoint died")
        if combine:
            measurements, warmups = [combined(measurements)], [combined(warmups)]
            loads = [Load(loads[0].url, sum(load.connections for load in loads))]
        store = deployment.store.key if deployment else None
        for (key, label), load, m, warmup in zip(streams, loads, measurements, warmups, strict=True):
            alone = cpu is not None and len(loads) == 1 and m.requests > 0
            per_request = None
            if alone and cpu is not None:
                per_request = (cpu.server + cpu.database) / m.requests_per_second * 1e6
            row = Row(key, label, load.connections, m, cpu, per_request, expect=expect, warmup=warmup, store=store)
            rows.append(row)
            flag = f"  !! {row.unexpected:,} {'non-' + (expect or '2xx')}" if row.unexpected else ""
            print(f"  {label:<46} {m.requests_per_second:>10,.0f} req/s  p99 {m.p99_ms:8.1f} ms{flag}", flush=True)

    def bare() -> list[Load]:
        return [Load(f"{bench.bare}/", conns)]

    scenario([("bare_before", "bare endpoint (before)")], lambda _: bare(), [bench.bare_process.pid])
    for deployment in bench.deployments:
        store, base = deployment.store, deployment.base
        large = store.key.endswith("_large")

        def auth(token: str) -> tuple[str, ...]:
            return (f"Authorization: Bearer {token}",)

        def catalog(token: str, base: str = base) -> Load:
            return Load(f"{base}/api/v1/products?limit=20", conns, headers=auth(token))

        def search(token: str, base: str = base) -> Load:
            query = urllib.parse.urlencode({"q": SEARCH, "limit": 20})
            return Load(f"{base}/api/v1/products?{query}", conns, headers=auth(token))

        def me(token: str, base: str = base) -> Load:
            return Load(f"{base}/api/v1/users/me", conns, headers=auth(token))

        def logins(connections: int, deployment: Deployment = deployment) -> Load:
            body = json.dumps({"email": CUSTOMER_EMAIL, "password": deployment.customer_password})
            headers = ("Content-Type: application/json",)
            return Load(f"{deployment.base}/api/v1/auth/login", connections, "POST", body, headers)

        def order(token: str, deployment: Deployment = deployment) -> Load:
            return Load(f"{deployment.base}/api/v1/orders/{deployment.order_id}", conns, headers=auth(token))

        def place_orders(
            token: str, bases: list[str], spread: bool = False, deployment: Deployment = deployment
        ) -> list[Load]:
            # "{unique}": bench/wrk.lua (or loadgen.py) gives every request a key of its own;
            # "@file": each request one of the bodies of the file.
            headers = ("Content-Type: application/json", *auth(token), "Idempotency-Key: {unique}")
            body = f"@{deployment.spread_bodies}" if spread else deployment.order_body
            # The connections split between the instances, the remainder to the first.
            shares = [conns // len(bases) + (1 if n < conns % len(bases) else 0) for n in range(len(bases))]
            return [
                Load(f"{b}/api/v1/orders", share, "POST", body, headers) for b, share in zip(bases, shares, strict=True)
            ]

        one, every = deployment.pids[:1], deployment.pids
        prefix, name = store.key, store.label
        scenario(
            [(f"{prefix}.catalog", f"{name}: GET /products?limit=20")],
            lambda t: [catalog(t)],
            one,
            deployment=deployment,
        )
        if store.kind == "sqlite" and not large:
            scenario([(f"{prefix}.me", f"{name}: GET /users/me")], lambda t: [me(t)], one, deployment=deployment)
            scenario(
                [(f"{prefix}.me_api_key", f"{name}: GET /users/me, API key")],
                lambda _, d=deployment: [me(d.api_key)],
                one,
                deployment=deployment,
            )
        scenario(
            [(f"{prefix}.search", f"{name}: GET /products?q={SEARCH}")],
            lambda t: [search(t)],
            one,
            deployment=deployment,
        )
        scenario(
            [(f"{prefix}.search_misses", f"{name}: GET /products?q=..., page cache missed")],
            lambda t, d=deployment: [
                Load(f"{d.base}/api/v1/products", conns, headers=auth(t), paths=str(d.search_paths))
            ],
            one,
            deployment=deployment,
        )
        if store.kind == "sqlite" and not large:
            # One account from one address: each attempt takes its place in the account's
            # budget (5) before its hash, so more connections than that would measure 429s.
            scenario(
                [(f"{prefix}.login", f"{name}: POST /auth/login")],
                lambda _: [logins(LOGIN_STREAM_CONNECTIONS)],
                one,
                deployment=deployment,
            )
            scenario(
                [
                    (f"{prefix}.catalog_during_logins", f"{name}: GET /products?limit=20 + logins"),
                    (f"{prefix}.logins_beside", "  beside it: POST /auth/login"),
                ],
                lambda t: [catalog(t), logins(LOGIN_STREAM_CONNECTIONS)],
                one,
                deployment=deployment,
            )
        scenario([(f"{prefix}.order", f"{name}: GET /orders/{{id}}")], lambda t: [order(t)], one, deployment=deployment)
        staff = deployment.log_in(STAFF_EMAIL, deployment.staff_password)
        scenario(
            [(f"{prefix}.order_misses", f"{name}: GET /orders/{{id}}, staff, {MISS_ORDERS:,} orders")],
            lambda _, staff=staff, d=deployment: [
                Load(f"{d.base}/api/v1/orders/x", conns, headers=auth(staff), paths=str(d.order_paths))
            ],
            one,
            deployment=deployment,
        )
        deployment.orders_before = store.count_orders()
        same = ", same 2 products" if deployment.spread_bodies else ""
        scenario(
            [(f"{prefix}.orders", f"{name}: POST /orders{same}" + (", 1 instance" if len(every) > 1 else ""))],
            lambda t, base=base: place_orders(t, [base]),
            one,
            deployment=deployment,
            expect="201",
        )
        bases = [server.base for server in deployment.servers]
        n = len(bases)
        if n > 1:
            scenario(
                [(f"{prefix}.orders_{n}", f"{name}: POST /orders{same}, {n} instances")],
                lambda t, bases=bases: place_orders(t, bases),
                every,
                deployment=deployment,
                expect="201",
                combine=True,
            )
        if deployment.spread_bodies:
            spread = f"{name}: POST /orders, 2 of {SPREAD_PRODUCTS:,} products"
            scenario(
                [(f"{prefix}.orders_spread", f"{spread}, 1 instance")],
                lambda t, base=base: place_orders(t, [base], spread=True),
                one,
                deployment=deployment,
                expect="201",
            )
            if n > 1:
                scenario(
                    [(f"{prefix}.orders_spread_{n}", f"{spread}, {n} instances")],
                    lambda t, bases=bases: place_orders(t, bases, spread=True),
                    every,
                    deployment=deployment,
                    expect="201",
                    combine=True,
                )
    scenario([("bare_after", "bare endpoint (after)")], lambda _: bare(), [bench.bare_process.pid])
    # Counted now, 12 s after wrk hung up on the orders still in flight: they are all answered.
    for deployment in bench.deployments:
        deployment.orders_after = deployment.store.count_orders()

    mean = bare_mean(rows)
    bare_costs = [row.cpu_us_per_request for row in rows if row.key.startswith("bare")]
    bare_cost = (bare_costs[0] + bare_costs[1]) / 2 if bare_costs[0] and bare_costs[1] else None
    for row in rows:
        row.ratio = row.measurement.requests_per_second / mean
        if bare_cost is not None and row.cpu_us_per_request:
            row.cpu_ratio = bare_cost / row.cpu_us_per_request
    return rows


def bare_mean(rows: list[Row]) -> float:
    """The denominator of every ratio: the bare endpoint before and after, averaged."""
    by_key = {row.key: row.measurement.requests_per_second for row in rows}
    return (by_key["bare_before"] + by_key["bare_after"]) / 2


@dataclass
class OrdersCheck:
    """Every 201 is an order in the store, and every order in the store was a 201."""

    store: str
    before: int  # orders in the store before its orders scenarios (the harness's own one)
    after: int  # after them
    server_201: int  # POST /api/v1/orders answered 201, from the servers' access logs, the harness's own included
    client_201: int  # 201s the load generators received, warm-ups and measurements
    sent: int | None  # requests the load generators sent (or built), warm-ups and measurements
    unexpected: int  # answers other than 201, warm-ups and measurements
    seeded: int  # orders `tillbox db seed` put there, before the servers started

    @property
    def created(self) -> int:
        return self.after - self.before

    @property
    def ok(self) -> bool:
        # The servers' count is exact. The client's is short by the requests in flight when
        # wrk hung up at its deadline: answered (and committed) after it stopped listening.
        # An answer other than 201 must have created nothing (it is reported on its own).
        ceiling = self.sent - self.unexpected if self.sent is not None else None
        within = self.client_201 <= self.created and (ceiling is None or self.created <= ceiling)
        return self.after - self.seeded == self.server_201 and within

    def describe(self) -> str:
        unanswered = f"{self.sent - self.client_201 - self.unexpected:,}" if self.sent is not None else "?"
        return (
            f"{self.store}: {self.created:,} orders created during the scenarios ({self.after:,} in all,"
            f" {self.seeded:,} of them seeded); the servers answered 201 to {self.server_201:,} POST /orders in all"
            f" (access logs); the load generators received {self.client_201:,} 201s and {self.unexpected:,}"
            f" other answers, and left {unanswered} unanswered when they hung up at their deadlines"
        )


def check_orders(deployment: Deployment, rows: list[Row]) -> OrdersCheck:
    prefix = deployment.store.key
    orders = [row for row in rows if row.store == prefix and row.key.startswith(f"{prefix}.orders")]
    runs = [m for row in orders for m in (row.warmup, row.measurement) if m is not None]
    server_201 = 0
    for log in deployment.access_logs:
        with log.open("rb") as lines:
            for line in lines:
                if b'"path":"/api/v1/orders"' in line and b'"method":"POST"' in line and b'"status":201' in line:
                    server_201 += 1
    sent = [m.sent for m in runs]
    return OrdersCheck(
        store=deployment.store.label,
        before=deployment.orders_before,
        after=deployment.orders_after,
        server_201=server_201,
        client_201=sum(m.statuses.get("201", 0) for m in runs),
        sent=sum(n for n in sent if n is not None) if None not in sent else None,
        unexpected=sum(m.other_than("201") for m in runs),
        seeded=deployment.store.orders,
    )


def server_side_statuses(access_logs: list[Path]) -> dict[str, int]:
    """What Tillbox itself logged, warm-ups and token fetches included: a check on the client's counts."""
    counts: dict[str, int] = {}
    for log in access_logs:
        with log.open("rb") as lines:
            for line in lines:
                found = re.search(rb'"status":(\d{3})', line)
                if found:
                    key = found.group(1).decode()
                    counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


# Output.
def percent(ratio: float) -> str:
    return f"{ratio:.0%}" if ratio >= 0.1 else f"{ratio:.1%}"


LABEL_WIDTH = 52


def render_table(rows: list[Row], verdicts: list[dict[str, Any]], checks: list[OrdersCheck]) -> str:
    columns = f"{'scenario':<{LABEL_WIDTH}} {'conns':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'of bare':>7}"
    columns += f" {'non-2xx':>7} {'server':>6} {'pg':>5} {'us/req':>7} {'by CPU':>6} {'wrk':>5} {'others':>6}"
    lines = [columns, "-" * len(columns)]
    for row in rows:
        m, cpu = row.measurement, row.cpu
        server = database = generator = others = "-"
        if cpu is not None:
            server, generator, others = (f"{cores:.2f}" for cores in (cpu.server, cpu.load_generator, cpu.others))
            database = f"{cpu.database:.2f}" if row.store and row.store.startswith("postgres") else "-"
        per_request = f"{row.cpu_us_per_request:,.0f}" if row.cpu_us_per_request is not None else "-"
        by_cpu = percent(row.cpu_ratio) if row.cpu_ratio is not None else "-"
        lines.append(
            f"{row.label:<{LABEL_WIDTH}} {row.connections:>5} {m.requests_per_second:>9,.0f} {m.p50_ms:>8.2f}"
            f" {m.p99_ms:>8.2f} {percent(row.ratio or 0.0):>7} {m.non_2xx:>7,} {server:>6} {database:>5}"
            f" {per_request:>7} {by_cpu:>6} {generator:>5} {others:>6}" + ("  !! NON-2XX" if m.non_2xx else "")
        )
    lines.append(f"{'bare endpoint, mean of before and after':<{LABEL_WIDTH}} {'':>5} {bare_mean(rows):>9,.0f}")
    lines.append(
        "(CPU in cores during the scenario: server, the Tillbox processes measured, all their threads; pg, every"
        " PostgreSQL\n process of the machine; wrk, the load generators; others, every other process. us/req: the"
        " CPU of Tillbox and,\n for PostgreSQL, of PostgreSQL per request; by CPU: the bare endpoint's us/req over"
        " this one's, the ratio to\n trust when others took CPU. p50 and p99 of several instances: the worst"
        " instance's)"
    )
    lines.append("")
    for verdict in verdicts:
        shown = {
            "ratio": lambda value: percent(value),
            "p99_ms": lambda value: f"{value:.1f} ms",
            "per_second": lambda value: f"{value:,.0f}/s",
            "speedup": lambda value: f"{value:.2f}x",
        }[verdict["metric"]](verdict["value"])
        if verdict["value_by_cpu"] is not None:
            shown += f" (by CPU {percent(verdict['value_by_cpu'])})"
        outcome = "met" if verdict["met"] else "NOT met"
        if verdict["invalid"]:
            outcome += " (unexpected statuses: the figure is not the endpoint's)"
        lines.append(f"target: {verdict['target']:<52} {shown:>19}  {outcome}")
    for row in rows:
        if row.expect == "201":
            lines.append(
                f"orders: {row.label}: {row.created_per_second:,.0f} created/s, p50 {row.measurement.p50_ms:.2f} ms,"
                f" p99 {row.measurement.p99_ms:.2f} ms, {row.unexpected:,} answers other than 201"
            )
    for check in checks:
        lines.append(f"check:  {check.store}: orders in the store == 201s answered: {'ok' if check.ok else 'FAILED'}")
    return "\n".join(lines)


def render_large(rows: list[Row], stores: list[Store]) -> str | None:
    """The large stores beside the small ones, scenario by scenario."""
    by_key = {row.key: row for row in rows}
    sizes = {store.key: store for store in stores}
    lines: list[str] = []
    for kind in ("sqlite", "postgres"):
        small, large = sizes.get(kind), sizes.get(f"{kind}_large")
        if small is None or large is None:
            continue
        if not lines:
            header = f"{'large store':<40} {'small req/s':>11} {'of bare':>7} {'large req/s':>11} {'of bare':>7}"
            header += f" {'large/small':>11} {'p99 small':>9} {'p99 large':>9}"
            lines += [header, "-" * len(header)]
        seeded = f" (seeded in {large.seed_seconds:,.0f} s)" if large.seed_seconds else ""
        lines.append(f"{large.label}: {large.products:,} products, {large.orders:,} orders{seeded}")
        for scenario in LARGE_SCENARIOS:
            a, b = by_key.get(f"{kind}.{scenario}"), by_key.get(f"{kind}_large.{scenario}")
            if a is None or b is None:
                continue
            name = {
                "catalog": "GET /products?limit=20",
                "search": f"GET /products?q={SEARCH}",
                "search_misses": "GET /products?q=..., page cache missed",
                "order": "GET /orders/{id}",
                "order_misses": f"GET /orders/{{id}}, {MISS_ORDERS:,} orders",
                "orders": "POST /orders (1 instance)",
            }[scenario]
            small_rate = a.created_per_second if a.expect else a.measurement.requests_per_second
            large_rate = b.created_per_second if b.expect else b.measurement.requests_per_second
            lines.append(
                f"  {name:<38} {small_rate:>11,.0f} {percent(a.ratio or 0):>7} {large_rate:>11,.0f}"
                f" {percent(b.ratio or 0):>7} {large_rate / small_rate if small_rate else 0:>11.2f}"
                f" {a.measurement.p99_ms:>9.1f} {b.measurement.p99_ms:>9.1f}"
            )
    return "\n".join(lines) if lines else None


def observations(
    rows: list[Row], server_statuses: dict[str, int], server_errors: int, checks: list[OrdersCheck]
) -> list[str]:
    notes = [("orders: " if check.ok else "!!! orders, the counts disagree: ") + check.describe() for check in checks]
    for row in rows:
        m = row.measurement
        if row.unexpected:
            expected = row.expect
            bad = ", ".join(
                f"{s}: {n:,}"
                for s, n in sorted(m.statuses.items())
                if (s != expected if expected else not s.startswith("2"))
            )
            notes.append(f"!!! {row.label.strip()}: {row.unexpected:,} non-{row.expect or '2xx'} responses ({bad})")
        if m.errors:
            notes.append(f"!!! {row.label.strip()}: client-side errors {m.errors}")
    logins = [row.measurement for row in rows if row.key.endswith((".login", ".logins_beside"))]
    if logins and all(m.non_2xx == 0 for m in logins):
        notes.append(
            f"logins: all {sum(m.requests for m in logins):,} answered 200 (successful logins are not throttled)"
        )
    bare = [row for row in rows if row.key in ("bare_before", "bare_after")]
    drift = abs(bare[0].measurement.requests_per_second / bare[1].measurement.requests_per_second - 1)
    if drift > 0.10:
        notes.append(f"!!! the bare endpoint moved {drift:.0%} between before and after: the machine was not quiet")
    disturbed = [f"{row.label.strip()} {row.cpu.others:.2f}" for row in rows if row.cpu and row.cpu.others > 0.25]
    if disturbed:
        notes.append(
            f"!!! other processes took CPU (cores, of {os.cpu_count()}) during: {'; '.join(disturbed)}. Their req/s,"
            " latencies and req/s ratios are disturbed; the ratios by CPU hold better. Rerun on a quiet machine."
        )
    for row in bare:
        if row.cpu is not None and row.cpu.server < 0.9 and row.cpu.others <= 0.25:
            notes.append(
                f"!!! {row.label}: the server used only {row.cpu.server:.2f} of a core, so the load generator set"
                " the pace, and every ratio is kinder than the truth"
            )
    server_bad = {s: n for s, n in server_statuses.items() if not s.startswith("2")}
    notes.append(
        f"servers' access logs: {sum(server_statuses.values()):,} requests (warm-ups included), "
        + (f"!!! non-2xx {server_bad}" if server_bad else "all 2xx")
    )
    if server_errors:
        notes.append(f"!!! servers' logs: {server_errors} lines at level error")
    return notes


def describe(args: argparse.Namespace, generator: Generator, bench: Bench, load_average: float) -> list[str]:
    # PYTHONUNBUFFERED matters too: it makes Tillbox's access log write once per request.
    environment = sorted(
        name if any(secret in name for secret in ("URL", "SECRET", "KEY", "PASSWORD")) else f"{name}={value}"
        for name, value in os.environ.items()
        if name.startswith("TILLBOX_") or name == "PYTHONUNBUFFERED"
    )
    pids = [pid for deployment in bench.deployments for pid in deployment.pids]
    on_uvloop = {maps_uvloop(pid) for pid in pids}
    uvloop = "loaded" if on_uvloop == {True} else ("NOT loaded" if False in on_uvloop else "?")
    lines = [
        f"code: {commit_of_tree()}",
        f"machine: {os.cpu_count()} CPUs, load average {load_average:.2f} before the run,"
        f" Python {platform.python_version()}, aiohttp {aiohttp.__version__}",
        f"load: {generator.description}; {args.connections} connections, {args.duration} s per scenario"
        f" after {WARMUP_SECONDS} s of warm-up",
        f"bare endpoint: {bench.bare_banner}",
        f"tillbox serve: uvloop {uvloop}; access log on, to a file; default settings; environment:"
        f" {', '.join(environment) or '-'}",
    ]
    for deployment in bench.deployments:
        store = deployment.store
        where = f"database {URL(store.url).path.lstrip('/')}" if store.url else "its data directory"
        seeded = f" in {store.seed_seconds:,.0f} s" if store.seed_seconds else ""
        lines.append(
            f"store {store.label}: {store.kind} ({where}), {store.products:,} products and {store.orders:,} orders"
            f" seeded{seeded}; {len(deployment.servers)} instance{'s' if len(deployment.servers) > 1 else ''}"
        )
    if any(deployment.store.kind == "postgres" for deployment in bench.deployments):
        version = postgres(args.postgres, "SELECT current_setting('server_version')")
        settings = postgres(
            args.postgres,
            "SELECT string_agg(name || '=' || setting, ', ' ORDER BY name) FROM pg_settings WHERE name IN"
            " ('shared_buffers', 'synchronous_commit', 'fsync', 'max_connections', 'wal_level')",
        )
        lines.append(f"PostgreSQL {version} on this machine: {settings}")
    if uvloop == "loaded":
        lines.append("both servers run on uvloop, so the comparison is fair")
    elif uvloop == "NOT loaded":
        lines.append("!!! Tillbox is not on uvloop and the baseline is: the ratios flatter the baseline")
    lines.append(
        "servers, PostgreSQL and load generator share this machine's CPUs: absolute req/s are lower than on"
        " separate machines; compare ratios"
    )
    if generator.client_bound:
        lines.append(
            "!!! the Python load generator is client-bound on a small machine: req/s measure the client as much"
            " as the server, and ratios are compressed towards 1; install wrk for real figures"
        )
    if args.connections != 64:
        lines.append("note: the targets are defined at 64 connections")
    if args.duration < 10:
        # Measured: the k-th of 64 new connections gets its first answer about k loop
        # iterations late (~150 ms for the last one on the catalog), on bare aiohttp too.
        lines.append(
            "note: in runs shorter than 10 s, p99 includes the burst of 64 new connections that opens each"
            " wrk run; judge p99 targets on the default duration"
        )
    return lines


def write_results(
    header: list[str],
    table: str,
    large: str | None,
    args: argparse.Namespace,
    rows: list[Row],
    verdicts: list[dict[str, Any]],
    server_statuses: dict[str, int],
    notes: list[str],
    checks: list[OrdersCheck],
) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "header": header,
        "settings": {
            "duration_s": args.duration,
            "warmup_s": WARMUP_SECONDS,
            "connections": args.connections,
            "login_stream_connections": LOGIN_STREAM_CONNECTIONS,
            "stores": args.stores,
            "large": args.large,
            "large_products": args.large_products if args.large else None,
            "large_orders": args.large_orders if args.large else None,
        },
        "bare_mean_requests_per_second": bare_mean(rows),
        "rows": [
            {"key": r.key, "label": r.label.strip(), "store": r.store, "connections": r.connections}
            | {"ratio_to_bare": r.ratio, "ratio_to_bare_by_cpu": r.cpu_ratio}
            | asdict(r.measurement)
            | {"non_2xx": r.measurement.non_2xx, "cpu_cores": asdict(r.cpu) if r.cpu else None}
            | {"cpu_us_per_request": r.cpu_us_per_request}
            | {"expected_status": r.expect, "unexpected": r.unexpected}
            | {"warmup": asdict(r.warmup) if r.warmup else None}
            for r in rows
        ],
        "targets": verdicts,
        "orders_checks": [asdict(check) | {"created": check.created, "ok": check.ok} for check in checks],
        "table": table.splitlines(),
        "large_store_table": large.splitlines() if large else None,
        "server_access_log_statuses": server_statuses,
        "notes": notes,
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds measured per scenario (default 10)")
    parser.add_argument("--connections", type=int, default=64, help="concurrent connections (default 64)")
    parser.add_argument("--quick", action="store_true", help="3 s per scenario")
    parser.add_argument("--load", choices=("auto", "wrk", "python"), default="auto", help="load generator")
    parser.add_argument(
        "--stores", default="sqlite,postgres", help="the stores to measure, of sqlite and postgres (default both)"
    )
    parser.add_argument(
        "--postgres", default=DEFAULT_POSTGRES, help="a PostgreSQL server on which the run may create databases"
    )
    parser.add_argument(
        "--only", default="", help="only these scenarios, by key without the store (catalog,orders_spread_2,...)"
    )
    parser.add_argument("--large", action="store_true", help="also measure a large store of each kind")
    parser.add_argument("--large-products", type=int, default=1_000_000, help="products of a large store")
    parser.add_argument("--large-orders", type=int, default=1_000_000, help="orders of a large store")
    args = parser.parse_args()
    if args.quick:
        args.duration = 3
    if args.duration < 1 or args.connections < 2:
        parser.error("--duration must be at least 1 and --connections at least 2")
    args.stores = [name.strip() for name in args.stores.split(",") if name.strip()]
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    if not args.stores or set(args.stores) - {"sqlite", "postgres"}:
        parser.error("--stores names sqlite, postgres or both")

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # the same clean-up as Ctrl-C

    signal.signal(signal.SIGTERM, on_sigterm)
    load_average = os.getloadavg()[0]  # before we add our own load: a busy machine skews everything
    processes = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="tillbox-bench-"))
    # Every database the run may create (see prepare_and_start), dropped whatever happens.
    created = [database_name(suffix) for suffix in ("", "_large")]
    try:
        generator = choose_load_generator(args.load)
        sizes = f"{SEED_PRODUCTS:,} products and {SEED_ORDERS:,} orders"
        if args.large:
            sizes += f", and {args.large_products:,} products and {args.large_orders:,} orders for the large stores"
        print(f"preparing: {', '.join(args.stores)}; {sizes}; a staff and a customer account each; in {tmp}")
        bench = prepare_and_start(tmp, processes, args)
        header = describe(args, generator, bench, load_average)
        print("\n".join(header), flush=True)

        rows = run_scenarios(generator, processes, bench, args.connections, args.duration, args.only)
        processes.stop_all()  # Tillbox flushes its access log on the way out
        for deployment in bench.deployments:
            for server in deployment.servers:
                server.wait()  # and its log is read to the end
        access_logs = [log for deployment in bench.deployments for log in deployment.access_logs]
        server_statuses = server_side_statuses(access_logs)
        server_errors = sum(
            server.stderr.count('"level":"error"') for deployment in bench.deployments for server in deployment.servers
        )

        checks = [check_orders(deployment, rows) for deployment in bench.deployments]
        by_key = {row.key: row for row in rows}
        verdicts = [v for v in (target.judge(by_key) for target in TARGETS) if v is not None]
        notes = observations(rows, server_statuses, server_errors, checks)
        table = render_table(rows, verdicts, checks)
        large = render_large(rows, [deployment.store for deployment in bench.deployments])
        print(f"\n{table}\n")
        if large:
            print(f"{large}\n")
        print("\n".join(notes))
        write_results(header, table, large, args, rows, verdicts, server_statuses, notes, checks)
        print(f"\nwritten: {RESULTS.relative_to(REPO)}")
        return 0
    except HarnessError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    finally:
        # A second Ctrl-C must not leave a server behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        processes.stop_all()
        if "postgres" in args.stores:
            drop_databases(args.postgres, created)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

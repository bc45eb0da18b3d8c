"""Crash test: kill -9 the server while clients place orders and record manual payments.

    .venv/bin/python -m tests.crash.crash --cycles 20
    .venv/bin/python -m tests.crash.crash --cycles 10 --database-url postgresql://postgres@127.0.0.1/crash

Each cycle starts `tillbox serve` (tests/harness.py), lets clients place orders and record
manual payments (every request with an Idempotency-Key), kills the server with SIGKILL at a
random moment (after a random number of answers, so that every cycle does work however
slow the machine), and starts it again; clients retry whatever got no answer, with the
same key. At the end:
- every order whose 201 a client received exists, with the lines it was answered with;
- for every product, stock + quantities reserved by live orders = the starting stock;
- no payment was applied twice: each order's amount_paid is the sum of its succeeded
  payments, never above its total, and every acknowledged payment exists exactly once;
- nothing was done twice: every order and payment in the store is one a client was told
  about, or the effect of a retry answered "in flight" (applied, but killed before the
  answer was kept for its key: core/ports/idempotency.py), one for one;
- every order has its lines (none was half-written);
- on SQLite, PRAGMA integrity_check is ok.
The store is SQLite in the work directory, or the (empty) PostgreSQL database named by
``--database-url``. tests/e2e/test_crash.py runs it in `make test` on both.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sqlite3
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from tests.harness import Server, environment, run_tillbox, until_async

PASSWORD = "crash test passphrase 42"
PRODUCTS = 8
STOCK = 100_000


def server_environment(database_url: str = "") -> dict[str, str]:
    settings = {"TILLBOX_SERVER_ACCESS_LOG": "false"}
    if database_url:
        settings["TILLBOX_DATABASE_URL"] = database_url
    return environment(settings)


@dataclass
class Ledger:
    """What the clients were told."""

    orders: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # order id -> [(product id, qty)]
    payments: dict[str, tuple[str, int]] = field(default_factory=dict)  # payment id -> (order id, amount)
    pending: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # unanswered: (key, path, body)
    answered: int = 0  # requests that got an answer, whatever it was
    # Retries answered "in flight": applied, but the server was killed before it kept the
    # answer for the key (core/ports/idempotency.py). Their orders' lines; their payments'
    # (order id, amount).
    stuck_orders: list[list[tuple[str, int]]] = field(default_factory=list)
    stuck_payments: list[tuple[str, int]] = field(default_factory=list)


def tillbox(*args: str, cwd: Path, env: Mapping[str, str], stdin: str | None = None) -> str:
    result = run_tillbox(*args, cwd=cwd, stdin=stdin, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"tillbox {' '.join(args)} failed: {result.stderr}")
    return result.stdout


async def start_server(workdir: Path, env: Mapping[str, str]) -> Server:
    # In a thread: the clients' event loop keeps running while the server starts.
    return await asyncio.to_thread(Server, workdir, env=env)


async def post(session: aiohttp.ClientSession, url: str, token: str, key: str, body: dict[str, Any]) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key}
    async with session.post(url, json=body, headers=headers, timeout=aiohttp.ClientTimeout(total=10)) as response:
        return response.status, await response.json()


async def login(session: aiohttp.ClientSession, base: str, email: str) -> str:
    async with session.post(base + "/api/v1/auth/login", json={"email": email, "password": PASSWORD}) as response:
        body = await response.json()
        if response.status != 200:
            raise RuntimeError(f"login failed: {body}")
        return str(body["access_token"])


async def _record(ledger: Ledger, path: str, status: int, body: Any) -> None:
    if status == 201 and path == "/api/v1/orders":
        ledger.orders[body["id"]] = [(item["product_id"], item["quantity"]) for item in body["items"]]
    elif status == 201 and path.endswith("/payments"):
        ledger.payments[body["id"]] = (body["order_id"], body["amount"])


async def client(
    session: aiohttp.ClientSession,
    base: str,
    token: str,
    staff: str,
    products: list[str],
    ledger: Ledger,
    stop: asyncio.Event,
    rng: random.Random,
) -> None:
    while not stop.is_set():
        if ledger.orders and rng.random() < 0.4:
            order_id = rng.choice(list(ledger.orders))
            path, body, who = (
                f"/api/v1/orders/{order_id}/payments",
                {"method": "manual", "reference": "cash", "amount": 1},
                staff,
            )
        else:
            chosen = rng.sample(products, rng.randint(1, 2))
            path, body, who = (
                "/api/v1/orders",
                {"items": [{"product_id": p, "quantity": rng.randint(1, 3)} for p in chosen]},
                token,
            )
        key = uuid.uuid4().hex
        ledger.pending.append((key, path, body | {"_as": who}))
        try:
            status, answer = await post(session, base + path, who, key, body)
        except (TimeoutError, aiohttp.ClientError):
            return  # the server died: the request stays pending, retried after the restart
        ledger.pending.remove((key, path, body | {"_as": who}))
        ledger.answered += 1
        await _record(ledger, path, status, answer)


async def retry_pending(session: aiohttp.ClientSession, base: str, ledger: Ledger) -> None:
    """Whatever got no answer is sent again with the same key: it must apply at most once."""
    for key, path, tagged in list(ledger.pending):
        body = {k: v for k, v in tagged.items() if k != "_as"}
        status, answer = await post(session, base + path, tagged["_as"], key, body)
        if status >= 500:
            raise RuntimeError(f"retry of {path} answered {status}: {answer}")
        if status == 409 and answer["error"]["code"] == "idempotency_key_in_flight":
            if path == "/api/v1/orders":
                ledger.stuck_orders.append(sorted((i["product_id"], i["quantity"]) for i in body["items"]))
            else:
                ledger.stuck_payments.append((path.split("/")[-2], body["amount"]))
        await _record(ledger, path, status, answer)
        ledger.pending.remove((key, path, tagged))


Query = Callable[..., Awaitable[list[tuple[Any, ...]]]]


@contextlib.asynccontextmanager
async def reading(database: Path | str) -> AsyncIterator[Query]:
    """Queries (SQL with ``?`` placeholders) on the store: a SQLite file, or a PostgreSQL URL."""
    if isinstance(database, Path):
        with contextlib.closing(sqlite3.connect(database)) as db:

            async def on_sqlite(sql: str, *params: Any) -> list[tuple[Any, ...]]:
                return db.execute(sql, params).fetchall()

            yield on_sqlite
        return
    conn = await asyncpg.connect(database, timeout=10)
    try:

        async def on_postgres(sql: str, *params: Any) -> list[tuple[Any, ...]]:
            parts = sql.split("?")
            numbered = parts[0] + "".join(f"${n}{part}" for n, part in enumerate(parts[1:], start=1))
            return [tuple(row) for row in await conn.fetch(numbered, *params)]

        yield on_postgres
    finally:
        await conn.close()


async def verify(database: Path | str, ledger: Ledger, products: list[str]) -> list[str]:
    problems: list[str] = []
    async with reading(database) as query:
        if isinstance(database, Path) and await query("PRAGMA integrity_check") != [("ok",)]:
            problems.append("integrity_check failed")
        stored = {row[0] for row in await query("SELECT id FROM orders")}
        lost = set(ledger.orders) - stored
        if lost:
            problems.append(f"{len(lost)} acknowledged orders are missing: {sorted(lost)[:5]}")
        lineless = await query(
            "SELECT id FROM orders o WHERE NOT EXISTS (SELECT 1 FROM order_lines l WHERE l.order_id = o.id)"
        )
        if lineless:
            problems.append(f"{len(lineless)} orders have no lines: {sorted(lineless)[:5]}")
        for order_id, lines in ledger.orders.items():
            got = sorted(await query("SELECT product_id, quantity FROM order_lines WHERE order_id = ?", order_id))
            if got != sorted(lines):
                problems.append(f"order {order_id} has lines {got}, the client was told {sorted(lines)}")
        for product_id in products:
            [(stock,)] = await query("SELECT stock FROM products WHERE id = ?", product_id)
            [(reserved,)] = await query(
                "SELECT coalesce(sum(l.quantity), 0) FROM order_lines l JOIN orders o ON o.id = l.order_id"
                " WHERE l.product_id = ? AND o.status NOT IN ('cancelled', 'expired')",
                product_id,
            )
            if stock + reserved != STOCK:
                problems.append(f"product {product_id}: stock {stock} + reserved {reserved} != {STOCK}")
        for order_id, total, paid in await query("SELECT id, total, amount_paid FROM orders"):
            [(succeeded,)] = await query(
                "SELECT coalesce(sum(amount), 0) FROM payments WHERE order_id = ? AND status = 'succeeded'", order_id
            )
            if paid != succeeded or paid > total:
                problems.append(f"order {order_id}: amount_paid {paid}, succeeded payments {succeeded}, total {total}")
        stored_payments = {row[0] for row in await query("SELECT id FROM payments")}
        missing = set(ledger.payments) - stored_payments
        if missing:
            problems.append(f"{len(missing)} acknowledged payments are missing")
        # Every request was answered in the end (those without an answer were retried with
        # their keys): what the store holds that no client was told about is, each, the effect
        # of a retry answered "in flight" (the same lines; the same order and amount). Any
        # other would have been applied twice.
        stuck_orders = list(ledger.stuck_orders)
        for order_id in sorted(stored - set(ledger.orders)):
            lines = sorted(await query("SELECT product_id, quantity FROM order_lines WHERE order_id = ?", order_id))
            if lines in stuck_orders:
                stuck_orders.remove(lines)
            else:
                problems.append(f"order {order_id} ({lines}) is no client's, nor a retry's answered in flight")
        stuck_payments = list(ledger.stuck_payments)
        for payment_id in sorted(stored_payments - set(ledger.payments)):
            [paid] = await query("SELECT order_id, amount FROM payments WHERE id = ?", payment_id)
            if paid in stuck_payments:
                stuck_payments.remove(paid)
            else:
                problems.append(f"payment {payment_id} {paid} is no client's, nor a retry's answered in flight")
    return problems


def answered(ledger: Ledger, count: int) -> Callable[[], Awaitable[bool]]:
    async def reached() -> bool:
        return ledger.answered >= count

    return reached


async def run(cycles: int, clients: int, seed: int, workdir: Path, database_url: str = "") -> list[str]:
    """The crash test in ``workdir``, on SQLite there or on the empty PostgreSQL database
    ``database_url``; the problems found (none: it passed)."""
    rng = random.Random(seed)
    env = server_environment(database_url)
    tillbox(
        "users",
        "create",
        "--email",
        "staff@crash.test",
        "--role",
        "staff",
        "--password-stdin",
        cwd=workdir,
        env=env,
        stdin=PASSWORD,
    )
    tillbox("users", "create", "--email", "buyer@crash.test", "--password-stdin", cwd=workdir, env=env, stdin=PASSWORD)
    ledger = Ledger()
    products: list[str] = []
    async with aiohttp.ClientSession() as session:
        for cycle in range(cycles):
            server = await start_server(workdir, env)
            staff = await login(session, server.base, "staff@crash.test")
            buyer = await login(session, server.base, "buyer@crash.test")
            if not products:
                for n in range(PRODUCTS):
                    status, body = await post(
                        session,
                        server.base + "/api/v1/products",
                        staff,
                        f"p{n}",
                        {"sku": f"CRASH-{n}", "name": f"Crash {n}", "price": 100 + n, "stock": STOCK},
                    )
                    assert status == 201, body
                    products.append(body["id"])
            await retry_pending(session, server.base, ledger)
            stop = asyncio.Event()
            tasks = [
                asyncio.create_task(client(session, server.base, buyer, staff, products, ledger, stop, rng))
                for _ in range(clients)
            ]
            # A random moment, counted in answers rather than seconds: however slow the
            # machine, every cycle does work before its kill.
            kill_after = ledger.answered + rng.randint(5, 80)
            await until_async(answered(ledger, kill_after), timeout=120, what=f"{kill_after} answers")
            server.kill()  # SIGKILL: no cleanup, no graceful anything
            stop.set()
            await asyncio.gather(*tasks)
            print(
                f"cycle {cycle + 1}/{cycles}: {len(ledger.orders)} orders, {len(ledger.payments)} payments acknowledged, "
                f"{len(ledger.pending)} unanswered",
                flush=True,
            )
        with await start_server(workdir, env) as server:
            await retry_pending(session, server.base, ledger)
            server.stop(timeout=15)
    return await verify(database_url or workdir / "tillbox-data" / "tillbox.db", ledger, products)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database-url", default="", help="an empty PostgreSQL database (default: SQLite)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tillbox-crash-") as tmp:
        problems = asyncio.run(run(args.cycles, args.clients, args.seed, Path(tmp), args.database_url))
    if problems:
        print("FAILED:\n  " + "\n  ".join(problems))
        raise SystemExit(1)
    print("crash test passed")


if __name__ == "__main__":
    main()

"""Crash test: kill -9 the server while clients place orders and record manual payments.

    .venv/bin/python -m tests.crash.crash --cycles 20

Each cycle starts `tillbox serve` (tests/harness.py), lets clients place orders and record
manual payments (every request with an Idempotency-Key), kills the server with SIGKILL at a
random moment (after a random number of answers, so that every cycle does work however
slow the machine), and starts it again; clients retry whatever got no answer, with the
same key. At the end:
- every order whose 201 a client received exists, with the lines it was answered with;
- for every product, stock + quantities reserved by live orders = the starting stock;
- no payment was applied twice: each order's amount_paid is the sum of its succeeded
  payments, never above its total, and every acknowledged payment exists exactly once;
- PRAGMA integrity_check is ok.
tests/e2e/test_crash.py runs it with 20 cycles in `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.harness import Server, environment, run_tillbox, until_async

PASSWORD = "crash test passphrase 42"
PRODUCTS = 8
STOCK = 100_000
ENV = environment({"TILLBOX_SERVER_ACCESS_LOG": "false"})


@dataclass
class Ledger:
    """What the clients were told."""

    orders: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # order id -> [(product id, qty)]
    payments: dict[str, tuple[str, int]] = field(default_factory=dict)  # payment id -> (order id, amount)
    pending: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # unanswered: (key, path, body)
    answered: int = 0  # requests that got an answer, whatever it was


def tillbox(*args: str, cwd: Path, stdin: str | None = None) -> str:
    result = run_tillbox(*args, cwd=cwd, stdin=stdin, env=ENV)
    if result.returncode != 0:
        raise RuntimeError(f"tillbox {' '.join(args)} failed: {result.stderr}")
    return result.stdout


async def start_server(workdir: Path) -> Server:
    # In a thread: the clients' event loop keeps running while the server starts.
    return await asyncio.to_thread(Server, workdir, env=ENV)


async def _post(
    session: aiohttp.ClientSession, url: str, token: str, key: str, body: dict[str, Any]
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key}
    async with session.post(url, json=body, headers=headers, timeout=aiohttp.ClientTimeout(total=10)) as response:
        return response.status, await response.json()


async def _login(session: aiohttp.ClientSession, base: str, email: str) -> str:
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
            status, answer = await _post(session, base + path, who, key, body)
        except (TimeoutError, aiohttp.ClientError):
            return  # the server died: the request stays pending, retried after the restart
        ledger.pending.remove((key, path, body | {"_as": who}))
        ledger.answered += 1
        await _record(ledger, path, status, answer)


async def retry_pending(session: aiohttp.ClientSession, base: str, ledger: Ledger) -> None:
    """Whatever got no answer is sent again with the same key: it must apply at most once."""
    for key, path, tagged in list(ledger.pending):
        body = {k: v for k, v in tagged.items() if k != "_as"}
        status, answer = await _post(session, base + path, tagged["_as"], key, body)
        if status >= 500:
            raise RuntimeError(f"retry of {path} answered {status}: {answer}")
        await _record(ledger, path, status, answer)
        ledger.pending.remove((key, path, tagged))


def verify(database: Path, ledger: Ledger, products: list[str]) -> list[str]:
    problems: list[str] = []
    with sqlite3.connect(database) as db:
        if db.execute("PRAGMA integrity_check").fetchone() != ("ok",):
            problems.append("integrity_check failed")
        stored = {row[0] for row in db.execute("SELECT id FROM orders")}
        lost = set(ledger.orders) - stored
        if lost:
            problems.append(f"{len(lost)} acknowledged orders are missing: {sorted(lost)[:5]}")
        for order_id, lines in ledger.orders.items():
            got = sorted(db.execute("SELECT product_id, quantity FROM order_lines WHERE order_id = ?", (order_id,)))
            if got != sorted(lines):
                problems.append(f"order {order_id} has lines {got}, the client was told {sorted(lines)}")
        for product_id in products:
            (stock,) = db.execute("SELECT stock FROM products WHERE id = ?", (product_id,)).fetchone()
            (reserved,) = db.execute(
                "SELECT coalesce(sum(l.quantity), 0) FROM order_lines l JOIN orders o ON o.id = l.order_id"
                " WHERE l.product_id = ? AND o.status NOT IN ('cancelled', 'expired')",
                (product_id,),
            ).fetchone()
            if stock + reserved != STOCK:
                problems.append(f"product {product_id}: stock {stock} + reserved {reserved} != {STOCK}")
        for order_id, total, paid in db.execute("SELECT id, total, amount_paid FROM orders"):
            (succeeded,) = db.execute(
                "SELECT coalesce(sum(amount), 0) FROM payments WHERE order_id = ? AND status = 'succeeded'", (order_id,)
            ).fetchone()
            if paid != succeeded or paid > total:
                problems.append(f"order {order_id}: amount_paid {paid}, succeeded payments {succeeded}, total {total}")
        stored_payments = {row[0] for row in db.execute("SELECT id FROM payments")}
        missing = set(ledger.payments) - stored_payments
        if missing:
            problems.append(f"{len(missing)} acknowledged payments are missing")
    return problems


def _answered(ledger: Ledger, count: int) -> Callable[[], Awaitable[bool]]:
    async def reached() -> bool:
        return ledger.answered >= count

    return reached


async def run(cycles: int, clients: int, seed: int, workdir: Path) -> list[str]:
    rng = random.Random(seed)
    tillbox(
        "users",
        "create",
        "--email",
        "staff@crash.test",
        "--role",
        "staff",
        "--password-stdin",
        cwd=workdir,
        stdin=PASSWORD,
    )
    tillbox("users", "create", "--email", "buyer@crash.test", "--password-stdin", cwd=workdir, stdin=PASSWORD)
    ledger = Ledger()
    products: list[str] = []
    async with aiohttp.ClientSession() as session:
        for cycle in range(cycles):
            server = await start_server(workdir)
            staff = await _login(session, server.base, "staff@crash.test")
            buyer = await _login(session, server.base, "buyer@crash.test")
            if not products:
                for n in range(PRODUCTS):
                    status, body = await _post(
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
            await until_async(_answered(ledger, kill_after), timeout=120, what=f"{kill_after} answers")
            server.kill()  # SIGKILL: no cleanup, no graceful anything
            stop.set()
            await asyncio.gather(*tasks)
            print(
                f"cycle {cycle + 1}/{cycles}: {len(ledger.orders)} orders, {len(ledger.payments)} payments acknowledged, "
                f"{len(ledger.pending)} unanswered",
                flush=True,
            )
        with await start_server(workdir) as server:
            await retry_pending(session, server.base, ledger)
            server.stop(timeout=15)
    return verify(workdir / "tillbox-data" / "tillbox.db", ledger, products)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tillbox-crash-") as tmp:
        problems = asyncio.run(run(args.cycles, args.clients, args.seed, Path(tmp)))
    if problems:
        print("FAILED:\n  " + "\n  ".join(problems))
        raise SystemExit(1)
    print("crash test passed")


if __name__ == "__main__":
    main()

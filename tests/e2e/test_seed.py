"""``tillbox db seed`` on either store: a demo catalog and a history of demo orders, in
imports of many at a time, with a progress bar on a terminal and one line otherwise."""

from __future__ import annotations

import asyncio
import os
import pty
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from core.domain.errors import Unavailable
from entrypoints import cli
from entrypoints.cli import _again_while_away, main
from entrypoints.demo import DEMO_CUSTOMERS
from tests.e2e.test_cli import tillbox
from tests.harness import SOURCE_TREE, environment
from tests.postgres import truncate_all

IMPORTABLE = {"paid", "fulfilled", "cancelled", "expired", "refunded", "partially_refunded"}

# What the store holds after a seed, asked the same way of either store.
CHECKS = {
    "products": "SELECT count(*) FROM products",
    "orders": "SELECT count(*) FROM orders",
    "customers": "SELECT count(DISTINCT customer_id) FROM orders",
    "demo accounts": "SELECT count(*) FROM users WHERE email LIKE 'demo-customer-%@example.com' AND role = 'customer'",
    # Every order is the sum of its lines, and its lines are products of the store.
    "orders whose total is not their lines'": (
        "SELECT count(*) FROM orders AS o WHERE total <> subtotal OR subtotal <>"
        " (SELECT sum(unit_price * quantity) FROM order_lines WHERE order_id = o.id)"
    ),
    "lines of no product": "SELECT count(*) FROM order_lines WHERE product_id NOT IN (SELECT id FROM products)",
    # Paid means one payment of the total; refunds add up to what the order says.
    "paid orders without their payment": (
        "SELECT count(*) FROM orders AS o WHERE amount_paid <>"
        " (SELECT coalesce(sum(amount), 0) FROM payments WHERE order_id = o.id AND status = 'succeeded')"
    ),
    "orders whose refunds disagree": (
        "SELECT count(*) FROM orders AS o WHERE amount_refunded <>"
        " (SELECT coalesce(sum(amount), 0) FROM refunds WHERE order_id = o.id AND status = 'succeeded')"
    ),
    "orders awaiting payment": "SELECT count(*) FROM orders WHERE status = 'pending_payment'",
    "events for webhooks": "SELECT count(*) FROM outbox",
    "product imports audited": "SELECT count(*) FROM audit_log WHERE action = 'product.imported'",
    "order imports audited": "SELECT count(*) FROM audit_log WHERE action = 'order.imported'",
}
STATUSES = "SELECT DISTINCT status FROM orders"


def sqlite_store(cwd: Path) -> Callable[[str], list[tuple[Any, ...]]]:
    def query(sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(cwd / "tillbox-data" / "tillbox.db") as db:
            return [tuple(row) for row in db.execute(sql).fetchall()]

    return query


def postgres_store(url: str) -> Callable[[str], list[tuple[Any, ...]]]:
    async def fetch(sql: str) -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(url)
        try:
            return [tuple(row) for row in await conn.fetch(sql)]
        finally:
            await conn.close()

    return lambda sql: asyncio.run(fetch(sql))


def described(query: Callable[[str], list[tuple[Any, ...]]]) -> dict[str, int]:
    return {name: int(query(sql)[0][0]) for name, sql in CHECKS.items()}


def expected(products: int, orders: int, *, product_imports: int = 1, order_imports: int = 1) -> dict[str, int]:
    return {
        "products": products,
        "orders": orders,
        "customers": len(DEMO_CUSTOMERS),
        "demo accounts": len(DEMO_CUSTOMERS),
        "orders whose total is not their lines'": 0,
        "lines of no product": 0,
        "paid orders without their payment": 0,
        "orders whose refunds disagree": 0,
        "orders awaiting payment": 0,
        "events for webhooks": 0,
        "product imports audited": product_imports,
        "order imports audited": order_imports,
    }


@pytest.fixture
def store_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The settings that select the store of the test: SQLite by default, PostgreSQL (the
    session's database, emptied) for tests parametrized with "postgres"."""
    if request.param == "sqlite":
        return {}
    url = request.getfixturevalue("postgres_url")
    asyncio.run(truncate_all(url))
    return {"TILLBOX_DATABASE_URL": url}


def query_of(env: dict[str, str], cwd: Path) -> Callable[[str], list[tuple[Any, ...]]]:
    url = env.get("TILLBOX_DATABASE_URL")
    return postgres_store(url) if url else sqlite_store(cwd)


STORES = [pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.mark.parametrize("store_env", STORES, indirect=True)
def test_seed_adds_a_catalog_and_orders_of_every_ending_and_again_only_what_is_new(
    tmp_path: Path, store_env: dict[str, str]
) -> None:
    seeded = tillbox("db", "seed", "--count", "60", "--orders", "250", cwd=tmp_path, env=store_env)
    assert seeded.returncode == 0, seeded.stderr
    assert seeded.stdout == "seeded 60 products (0 already there) and 250 orders of 5 demo customers\n"
    assert seeded.stderr == ""  # no terminal: no progress bar
    query = query_of(store_env, tmp_path)
    assert described(query) == expected(60, 250)
    assert {row[0] for row in query(STATUSES)} == IMPORTABLE  # 250 orders show every ending

    again = tillbox("db", "seed", "--count", "70", "--orders", "5", cwd=tmp_path, env=store_env)
    assert again.returncode == 0, again.stderr
    assert again.stdout == "seeded 10 products (60 already there) and 5 orders of 5 demo customers\n"
    assert described(query) == expected(70, 255, product_imports=2, order_imports=2)  # the same 5 customers


@pytest.mark.parametrize("store_env", STORES, indirect=True)
def test_seed_imports_in_batches(
    tmp_path: Path,
    store_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("TILLBOX_")]:
        monkeypatch.delenv(name)
    for name, value in store_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(cli, "PRODUCT_BATCH", 7)
    monkeypatch.setattr(cli, "ORDER_BATCH", 9)
    monkeypatch.setattr(cli, "ORDER_PRODUCTS", 12)  # the orders are of the first 12 products
    main(["db", "seed", "--count", "30", "--orders", "40"])
    assert capsys.readouterr().out == "seeded 30 products (0 already there) and 40 orders of 5 demo customers\n"
    query = query_of(store_env, tmp_path)
    assert described(query) == expected(30, 40, product_imports=5, order_imports=5)
    first_12 = "SELECT id FROM products ORDER BY id LIMIT 12"
    assert query(f"SELECT count(DISTINCT product_id) FROM order_lines WHERE product_id NOT IN ({first_12})") == [(0,)]


def test_seed_shows_a_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [*SOURCE_TREE, "db", "seed", "--count", "20", "--orders", "30"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=follower,
            env=environment({"COLUMNS": "100"}),
            timeout=60,
            check=False,
        )
        os.close(follower)
        follower = -1
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal has no writer left
                break
            if not chunk:
                break
            shown += chunk
    finally:
        if follower != -1:
            os.close(follower)
        os.close(leader)
    assert done.returncode == 0, shown
    assert done.stdout == b"seeded 20 products (0 already there) and 30 orders of 5 demo customers\n"
    text = shown.decode(errors="replace")
    assert "products" in text and "20/20" in text
    assert "orders" in text and "30/30" in text


def test_seed_refuses_negative_counts(tmp_path: Path) -> None:
    refused = tillbox("db", "seed", "--orders", "-1", cwd=tmp_path)
    assert refused.returncode == 1
    assert refused.stderr == "tillbox: error: --count and --orders must be 0 or more\n"


def test_orders_need_a_product_to_order(tmp_path: Path) -> None:
    refused = tillbox("db", "seed", "--count", "0", "--orders", "3", cwd=tmp_path)
    assert refused.returncode == 1
    assert refused.stderr == (
        "tillbox: error: the catalog has no active product to order; seed products first (--count)\n"
    )
    assert sqlite_store(tmp_path)("SELECT count(*) FROM users") == [(0,)]  # no demo customer either


# Imports while the store restarts.
async def test_an_import_runs_again_while_the_store_is_away_but_not_after_a_failed_commit() -> None:
    calls: list[str] = []

    async def away_twice() -> str:
        calls.append("try")
        if len(calls) < 3:
            raise Unavailable("The database cannot be reached; try again.", code="database_unavailable")
        return "imported"

    assert await _again_while_away(away_twice, seconds=5) == "imported"
    assert calls == ["try", "try", "try"]

    async def commit_failed() -> str:
        calls.append("commit")
        raise Unavailable("The database could not save the changes.", code="commit_failed")

    with pytest.raises(Unavailable) as caught:
        await _again_while_away(commit_failed, seconds=5)
    assert caught.value.code == "commit_failed"
    assert calls.count("commit") == 1  # whether it was kept is not known: never twice

    async def away() -> str:
        raise Unavailable("The database cannot be reached; try again.", code="database_unavailable")

    with pytest.raises(Unavailable):
        await _again_while_away(away, seconds=0.3)  # gives up at its deadline

"""How fast the SQLite adapter's units of work are, on this machine. Prints figures, asserts nothing.

    .venv/bin/python bench/sqlite_uow.py [--seconds 3] [--tasks 64] [--dir PATH]

- write units/s: each unit gets 2 products, changes the stock of both, appends an audit
  entry and commits (synchronous=FULL: a commit returns after its fsync), run by
  --tasks concurrent tasks, then by one task alone (one fsync per unit: the latency floor);
- read-only product lists/s (limit 20, active products), one after another.

Put --dir on the disk you will serve from: fsync costs what the disk makes it cost.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import pathlib
import random
import shutil
import tempfile
import time
from datetime import UTC, datetime

from adapters.clock import SystemClock
from adapters.sqlite import SqliteDatabase
from core.domain.audit import AuditEntry
from core.domain.catalog import Product
from core.domain.money import Money
from core.domain.pagination import PageRequest
from core.ports.repositories import ProductFilter

PRODUCTS = 1000
AUDIT_IDS = itertools.count(1)


async def seed(db: SqliteDatabase) -> None:
    now = datetime.now(UTC)
    async with db() as uow:
        for n in range(PRODUCTS):
            await uow.products.add(
                Product(
                    id=f"prd_{n:012d}",
                    sku=f"SKU-{n}",
                    name=f"Product {n}",
                    description="A thing that is sold.",
                    price=Money(100 + n, "USD"),
                    stock=1_000_000,
                    active=n % 10 != 0,
                    created_at=now,
                    updated_at=now,
                )
            )
        await uow.commit()


async def write_units(db: SqliteDatabase, tasks: int, seconds: float) -> tuple[float, int, int]:
    """Units/s, the units done, and the COMMITs it took."""
    deadline = time.perf_counter() + seconds
    done = 0

    async def worker(rng: random.Random) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            first, second = rng.sample(range(PRODUCTS), 2)
            async with db() as uow:
                now = datetime.now(UTC)
                for n, delta in ((first, -1), (second, +1)):
                    product = await uow.products.get(f"prd_{n:012d}")
                    assert product is not None
                    product.adjust_stock(delta, at=now)
                    await uow.products.update(product)
                await uow.audit.append(
                    AuditEntry(
                        id=f"aud_{next(AUDIT_IDS):012d}",
                        at=now,
                        actor_id="usr_bench",
                        action="product.stock_adjusted",
                        object_type="product",
                        object_id=f"prd_{first:012d}",
                        source_ip="127.0.0.1",
                        details={"moved_to": second},
                    )
                )
                await uow.commit()
            done += 1

    commits_before = db.stats.commits
    started = time.perf_counter()
    await asyncio.gather(*(worker(random.Random(n)) for n in range(tasks)))
    elapsed = time.perf_counter() - started
    return done / elapsed, done, db.stats.commits - commits_before


async def read_lists(db: SqliteDatabase, seconds: float, f: ProductFilter) -> float:
    deadline = time.perf_counter() + seconds
    calls = 0
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        for _ in range(100):
            async with db(readonly=True) as uow:
                page = await uow.products.list(PageRequest(limit=20), f)
            assert len(page.items) == 20
        calls += 100
    return calls / (time.perf_counter() - started)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--tasks", type=int, default=64, help="concurrent writers")
    parser.add_argument("--dir", type=pathlib.Path, default=None, help="where the database file goes")
    args = parser.parse_args()

    directory = pathlib.Path(tempfile.mkdtemp(prefix="tillbox-bench-", dir=args.dir))
    db = SqliteDatabase(directory / "bench.db", clock=SystemClock())
    try:
        await db.open()
        await seed(db)
        print(f"database: {directory / 'bench.db'} (synchronous={db.pragmas()['writer']['synchronous']}, WAL)")

        rate, done, commits = await write_units(db, args.tasks, args.seconds)
        print(
            f"write units, {args.tasks} tasks: {rate:10,.0f} units/s"
            f"  ({done:,} units, {commits:,} COMMITs, {done / max(commits, 1):.1f} units per fsync)"
        )
        rate, done, commits = await write_units(db, 1, args.seconds)
        print(f"write units, 1 task:   {rate:10,.0f} units/s  ({done:,} units, {commits:,} COMMITs)")

        rate = await read_lists(db, args.seconds, ProductFilter(active=True))
        print(f"read-only product list (limit 20, active): {rate:10,.0f} calls/s  ({1e6 / rate:.0f} µs each)")
        rate = await read_lists(db, args.seconds, ProductFilter(active=True, text="product"))
        print(f"read-only product search (limit 20, 900 matches): {rate:10,.0f} calls/s  ({1e6 / rate:.0f} µs each)")
    finally:
        await db.close()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())

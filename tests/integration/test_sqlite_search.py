"""Product search on SQLite: both query plans (the full-text index first for a few matches,
the id order first for many) return exactly what the in-memory fake returns, page by page,
on a random catalog."""

from __future__ import annotations

import pathlib
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import attrs
import pytest

from adapters.sqlite import SqliteDatabase
from adapters.sqlite import repositories as repos
from core.domain.catalog import Product
from core.domain.money import Money
from core.domain.pagination import PageRequest
from core.ports.repositories import ProductFilter, ProductSort
from core.ports.unit_of_work import UnitOfWorkFactory
from tests.fakes import FixedClock, InMemoryDatabase

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CLOCK = FixedClock(T0)
WORDS = ["lamp", "lampe", "Läufer", "oak", "oaken", "Café", "cafe", "chair", "blue", "BLUE-2", "x1", "mug", "desk"]
QUERIES = [
    "lamp",
    "la",
    "l",
    "LAUF",
    "läu",
    "cafe",
    "café oak",
    "oak lamp",
    "blue 2",
    "x",
    "x1 mug",
    "desk chair lamp",
    "zzz",
    '"lamp',
    "NEAR(lamp)",
    "mug*",
]
FILTERS = [
    ProductFilter(),
    ProductFilter(active=True),
    ProductFilter(active=False),
    ProductFilter(price_min=2000, price_max=6000),
    ProductFilter(active=True, price_max=3000),
]


def catalog() -> list[Product]:
    rng = random.Random(11)
    products = []
    for n in range(300):
        products.append(
            Product(
                id=f"prd_{n:06d}",
                sku=f"SKU-{n}",
                name=" ".join(rng.choices(WORDS, k=2)),
                description=" ".join(rng.choices(WORDS, k=rng.randrange(0, 6))),
                price=Money(rng.randrange(0, 10_000), "USD"),
                stock=1,
                active=rng.random() < 0.8,
                created_at=T0 + timedelta(seconds=rng.randrange(0, 60)),  # ties, and not in id order
                updated_at=T0,
            )
        )
    rng.shuffle(products)  # rowid order is not id order
    return products


async def _fill(factory: UnitOfWorkFactory, products: list[Product]) -> None:
    async with factory() as uow:
        for product in products:
            await uow.products.add(product)
        await uow.commit()


@pytest.fixture(scope="module")
def products() -> list[Product]:
    return catalog()


@pytest.fixture
async def sqlite(tmp_path: pathlib.Path, products: list[Product]) -> AsyncIterator[SqliteDatabase]:
    db = SqliteDatabase(tmp_path / "tillbox.db", clock=CLOCK)
    await db.open()
    await _fill(db, products)
    yield db
    await db.close()


_expected: dict[ProductFilter, list[list[str]]] = {}


@pytest.fixture
async def expected(products: list[Product]) -> dict[ProductFilter, list[list[str]]]:
    """What the fake answers (computed once: the fake copies its whole store per unit)."""
    if not _expected:
        memory = InMemoryDatabase(CLOCK)
        await _fill(memory, products)
        for f in _filters():
            _expected[f] = await search(memory, f)
    return _expected


def _filters() -> list[ProductFilter]:
    return [
        ProductFilter(active=base.active, price_min=base.price_min, price_max=base.price_max, text=text)
        for text in QUERIES
        for base in FILTERS
    ]


async def search(factory: UnitOfWorkFactory, f: ProductFilter, sort: ProductSort = ProductSort.ID) -> list[list[str]]:
    """Every page, as lists of ids, following next_after."""
    pages, after = [], None
    async with factory(readonly=True) as uow:
        while True:
            page = await uow.products.list(PageRequest(limit=7, after=after), f, sort)
            pages.append([p.id for p in page.items])
            if page.next_after is None:
                return pages
            after = page.next_after


@pytest.mark.parametrize("few", [0, 40, repos.FEW_TEXT_MATCHES])
async def test_both_search_plans_agree_with_the_fake(
    sqlite: SqliteDatabase,
    expected: dict[ProductFilter, list[list[str]]],
    few: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(repos, "FEW_TEXT_MATCHES", few)
    for f in _filters():
        assert await search(sqlite, f) == expected[f], f
    assert sum(len(ids) for pages in expected.values() for ids in pages) > 500  # the queries do match things


_expected_sorted: dict[tuple[ProductSort, ProductFilter], list[list[str]]] = {}
SORT_FILTERS = FILTERS + [attrs.evolve(base, text=text) for text in QUERIES[:4] for base in FILTERS]


@pytest.fixture
async def expected_sorted(products: list[Product]) -> dict[tuple[ProductSort, ProductFilter], list[list[str]]]:
    """What the fake answers for every sort (computed once, like ``expected``)."""
    if not _expected_sorted:
        memory = InMemoryDatabase(CLOCK)
        await _fill(memory, products)
        for sort in ProductSort:
            for f in SORT_FILTERS:
                _expected_sorted[sort, f] = await search(memory, f, sort)
    return _expected_sorted


@pytest.mark.parametrize("sort", [s for s in ProductSort if s is not ProductSort.ID], ids=lambda s: s.value)
@pytest.mark.parametrize("few", [0, repos.FEW_TEXT_MATCHES])
async def test_every_sort_of_both_search_plans_agrees_with_the_fake(
    sqlite: SqliteDatabase,
    expected_sorted: dict[tuple[ProductSort, ProductFilter], list[list[str]]],
    sort: ProductSort,
    few: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(repos, "FEW_TEXT_MATCHES", few)
    for f in SORT_FILTERS:
        assert await search(sqlite, f, sort) == expected_sorted[sort, f], f

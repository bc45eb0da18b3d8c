"""The text search of PostgreSQL finds exactly what SQLite's FTS5 finds, for the same
products and the same queries, including text that PostgreSQL's own parsers would split
or fold differently (hyphens, e-mail addresses, paths, accents, scripts without spaces)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from adapters.postgres import PostgresDatabase
from adapters.sqlite import SqliteDatabase
from core.domain.pagination import PageRequest
from core.ports.repositories import ProductFilter
from core.ports.unit_of_work import UnitOfWorkFactory
from tests.contract.builders import Make, store
from tests.fakes import FixedClock, SequentialIds
from tests.postgres import truncate_all

pytestmark = pytest.mark.postgres

NAMES = [
    "Brass desk-lamp",
    "kate@example.com gift card",
    "/usr/local/bin tool",
    "Café crème brûlée set",
    "Ｆｕｌｌｗｉｄｔｈ mug",
    "東京 タワー 模型",
    "Ἀθῆναι postcard",
    "Straße sign",
    "naïve Øresund coaster",
    "e\u0301cole pencil",
    "O'Brien's whiskey glass",
    "3.14159 pi plate",
    "x-ray_vision goggles",
    "İstanbul ıspanak bowl",
    "ǅemal tea",
    "ﬁne ﬂour sack",
    "über-cool 2000™ fan",
    "tab\tseparated\nlines",
    "emoji 🎉 party hat",
    "Mixed1234Words and42numbers",
]
QUERIES = [
    "desk",
    "desk-lamp",
    "lamp",
    "kate",
    "kate@example.com",
    "example",
    "usr",
    "/usr/local",
    "cafe",
    "creme brulee",
    "CRÈME",
    "fullwidth",
    "ｆｕｌｌ",
    "東京",
    "タワー",
    "αθηναι",
    "Ἀθῆναι",
    "strasse",
    "straße",
    "naive",
    "oresund",
    "ecole",
    "école",
    "o'brien",
    "brien",
    "3.14",
    "14159",
    "x-ray",
    "vision",
    "istanbul",
    "ıspanak",
    "dzemal",
    "ǆemal",
    "fine",
    "ﬁne",
    "uber",
    "2000",
    "™",
    "separated lines",
    "🎉",
    "party",
    "mixed1234",
    "and42",
    "words",
    "",
    "'\"*()",
]


async def _skus(factory: UnitOfWorkFactory, text: str) -> list[str]:
    async with factory(readonly=True) as uow:
        page = await uow.products.list(PageRequest(limit=100), ProductFilter(text=text))
    return [p.sku for p in page.items]


async def test_postgresql_finds_what_sqlite_finds(tmp_path: Path, postgres_url: str) -> None:
    clock = FixedClock()
    make = Make(SequentialIds(), clock)
    rng = random.Random(8)
    products = [
        make.product(f"SKU-{n:03d}", name=name, description=" ".join(rng.sample(NAMES, 2)))
        for n, name in enumerate(NAMES)
    ]
    queries = QUERIES + [word[: rng.randint(1, len(word))] for name in NAMES for word in name.split()]
    sqlite = SqliteDatabase(tmp_path / "search.db", clock=clock)
    await truncate_all(postgres_url)
    postgres = PostgresDatabase(postgres_url, clock=clock, pool_min=1, pool_max=2)
    await sqlite.open()
    await postgres.open()
    try:
        await store(sqlite, *products)
        await store(postgres, *products)
        found = {text: await _skus(sqlite, text) for text in queries}
        differences = {text: (found[text], await _skus(postgres, text)) for text in queries}
        differences = {text: pair for text, pair in differences.items() if pair[0] != pair[1]}
        assert differences == {}
        assert sum(bool(skus) for skus in found.values()) > len(queries) / 2  # most queries find something
    finally:
        await sqlite.close()
        await postgres.close()

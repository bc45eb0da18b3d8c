"""Reads that take too long, over real HTTP: stopped at their budget with a 503 in the
envelope while the server goes on answering."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from adapters.postgres import repositories as postgres_repositories
from adapters.sqlite import repositories as sqlite_repositories
from tests.e2e.conftest import Store, assert_error, create_product, on_every_store, serve

pytestmark = on_every_store

# The product look-up of GET /products/{id} (on SQLite, a read on the event loop), made
# endless: a recursive count that only an interrupt (SQLite's progress handler, PostgreSQL's
# statement_timeout) ends, in front of the real statement. Both dialects take it as it is.
REPOSITORIES = {"sqlite": sqlite_repositories, "postgres": postgres_repositories}


def endless(product_get: str) -> str:
    return (
        "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) "
        + product_get
        + " AND (SELECT count(*) FROM c) > 0"
    )


async def test_a_read_past_its_budget_is_a_503_while_the_server_keeps_answering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: Store
) -> None:
    async with serve(tmp_path / "data", TILLBOX_DATABASE_READ_BUDGET_MS="100", store=store) as api:
        staff = await api.token_for("staff@example.com", "staff")
        mug = await create_product(api, staff, sku="MUG-1", price=1250, stock=10)
        path = f"/api/v1/products/{mug['id']}"
        repositories = REPOSITORIES[store.kind]
        monkeypatch.setattr(repositories, "PRODUCT_GET", endless(repositories.PRODUCT_GET))

        (status, body, headers), (health, _, _), (listed, page, _) = await asyncio.gather(
            api.call("GET", path),
            api.call("GET", "/healthz"),
            api.call("GET", "/api/v1/products"),
        )

        assert_error(status, body, 503, "query_timeout")
        assert body["error"]["details"] == {"budget_ms": 100}
        assert health == 200
        assert listed == 200 and [p["sku"] for p in page["data"]] == ["MUG-1"]
        monkeypatch.undo()
        status, product, _ = await api.call("GET", path)
        assert status == 200 and product["stock"] == 10  # nothing changed, and it reads again

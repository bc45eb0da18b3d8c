"""CORS: only configured origins get the headers; a preflight needs no token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from entrypoints.container import build_container
from entrypoints.http.app import create_app
from tests.e2e.conftest import settings_for


@pytest.fixture
async def base(tmp_path: Path) -> AsyncIterator[str]:
    container = build_container(settings_for(tmp_path / "data", TILLBOX_SERVER_CORS_ORIGINS="https://shop.example"))
    server = TestServer(create_app(container), host="127.0.0.1", port=0)
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


async def test_allowed_origin_gets_cors_headers_and_preflight(base: str) -> None:
    async with aiohttp.ClientSession() as session:
        headers = {"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"}
        async with session.options(base + "/api/v1/products", headers=headers) as response:
            assert response.status == 204
            assert response.headers["Access-Control-Allow-Origin"] == "https://shop.example"
            assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
            assert "If-None-Match" in response.headers["Access-Control-Allow-Headers"]
        async with session.get(base + "/api/v1/products", headers={"Origin": "https://shop.example"}) as response:
            assert response.status == 200
            assert response.headers["Access-Control-Allow-Origin"] == "https://shop.example"
            assert "X-Request-ID" in response.headers["Access-Control-Expose-Headers"]
            assert response.headers.getall("Vary") == ["Authorization, Origin"]  # the catalog's, and CORS's
            assert response.headers["Cache-Control"] == "public, max-age=10"
        async with session.get(base + "/healthz", headers={"Origin": "https://shop.example"}) as response:
            assert response.headers.getall("Vary") == ["Origin"]


async def test_other_origins_get_nothing(base: str) -> None:
    async with aiohttp.ClientSession() as session:
        headers = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
        async with session.options(base + "/api/v1/products", headers=headers) as response:
            assert response.status == 405
            assert "Access-Control-Allow-Origin" not in response.headers
        async with session.get(base + "/api/v1/products", headers={"Origin": "https://evil.example"}) as response:
            assert response.status == 200
            assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.parametrize("origin", [None, "https://evil.example"], ids=["no-origin", "other-origin"])
async def test_a_publicly_cacheable_read_varies_by_origin_whatever_the_origin(base: str, origin: str | None) -> None:
    """A shared cache keeps this copy, without Access-Control-Allow-Origin: unless it says it
    varies by Origin, the cache serves it to the storefront's own origin, whose browser then
    refuses it (and the storefront's copy, with the header, to everyone else)."""
    headers = {"Origin": origin} if origin else {}
    async with aiohttp.ClientSession() as session:
        async with session.get(base + "/api/v1/products", headers=headers) as response:
            assert response.status == 200
            assert response.headers["Cache-Control"] == "public, max-age=10"
            assert response.headers.getall("Vary") == ["Authorization, Origin"]
            assert "Access-Control-Allow-Origin" not in response.headers
            etag = response.headers["ETag"]
        async with session.get(base + "/api/v1/products", headers={**headers, "If-None-Match": etag}) as response:
            assert response.status == 304
            assert response.headers.getall("Vary") == ["Authorization, Origin"]

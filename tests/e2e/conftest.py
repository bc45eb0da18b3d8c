"""End-to-end fixtures: the real application on a free port, a real SQLite file in a
temporary directory, real HTTP through aiohttp's client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from core.domain.users import Actor, Role
from core.services.auth import CreateUser
from entrypoints.container import Container, build_container
from entrypoints.http.app import create_app
from entrypoints.settings import load_settings

PASSWORD = "correct battery horse staple"


class Api:
    """A thin JSON client for one running server."""

    def __init__(self, session: aiohttp.ClientSession, base: str, container: Container):
        self.session = session
        self.base = base
        self.container = container

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        data: Any = None,
    ) -> tuple[int, Any, Any]:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        async with self.session.request(
            method, self.base + path, json=json, data=data, headers=all_headers
        ) as response:
            raw = await response.read()
            body = None
            if raw and response.content_type == "application/json":
                body = await response.json()
            return response.status, body, response.headers

    async def create_user(self, email: str, role: str = "customer", password: str = PASSWORD) -> str:
        auth = await self.container.auth_service()
        user = await auth.create_user(
            CreateUser(actor=Actor.operator(), email=email, password=password, role=Role(role))
        )
        return user.id

    async def login(self, email: str, password: str = PASSWORD) -> dict[str, Any]:
        status, body, _ = await self.call("POST", "/api/v1/auth/login", json={"email": email, "password": password})
        assert status == 200, body
        return body

    async def token_for(self, email: str, role: str = "customer") -> str:
        await self.create_user(email, role)
        return (await self.login(email))["access_token"]


def settings_for(data_dir: Path, **env: str) -> Any:
    environment = {"TILLBOX_DATA_DIR": str(data_dir), "TILLBOX_SERVER_ACCESS_LOG": "false", **env}
    return load_settings(None, environment)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    container = build_container(settings_for(tmp_path / "data"))
    server = TestServer(create_app(container), host="127.0.0.1", port=0)
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        yield Api(session, str(server.make_url("")).rstrip("/"), container)
    await server.close()


def assert_error(status: int, body: Any, expected_status: int, code: str | None = None) -> None:
    """Every error has the one envelope of PRODUCT.md."""
    assert status == expected_status, body
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "request_id", "timestamp", "details"}, error
    assert error["request_id"] and error["timestamp"].endswith("Z")
    assert "Traceback" not in error["message"]
    if code is not None:
        assert error["code"] == code, error

"""Console fixtures: the real Textual app (driven by Pilot at 80x24) on a real store, a
SQLite file in a temporary data directory or the test session's PostgreSQL database,
opened through the same services `tillbox admin` opens."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from core.domain.users import Actor, Role
from core.services.auth import CreateUser
from entrypoints.console.app import AdminConsole
from entrypoints.console.context import ConsoleServices
from entrypoints.console.run import open_services
from entrypoints.container import migrate_store
from entrypoints.settings import Settings, load_settings
from tests.harness import until_async
from tests.postgres import truncate_all

PASSWORD = "correct battery horse staple"
SIZE = (80, 24)

#: ``pytestmark = on_every_store`` runs each test of a suite on SQLite and on PostgreSQL.
on_every_store = pytest.mark.parametrize(
    "console_store", [pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


@pytest.fixture
async def console_store(request: pytest.FixtureRequest) -> str:
    """The store's database URL: empty for SQLite (the default), or the session's PostgreSQL
    database, emptied for the test."""
    kind = getattr(request, "param", "sqlite")
    if kind == "sqlite":
        return ""
    url = request.getfixturevalue("postgres_url")
    await truncate_all(url)
    return str(url)


def console_settings(data_dir: Path, url: str = "", **env: str) -> Settings:
    environment = {"TILLBOX_DATA_DIR": str(data_dir), **({"TILLBOX_DATABASE_URL": url} if url else {}), **env}
    return load_settings(None, environment)


@attrs.define
class Shop:
    """A migrated store with one account of each role; ``services`` open on it (the test's
    own handle, beside the console's)."""

    settings: Settings
    services: ConsoleServices
    users: dict[str, str] = attrs.field(factory=dict)  # email -> user id

    async def create_user(self, email: str, role: str) -> str:
        user = await self.services.auth.create_user(
            CreateUser(actor=Actor.operator(), email=email, password=PASSWORD, role=Role(role))
        )
        self.users[email] = user.id
        return user.id

    def console(self) -> AdminConsole:
        return AdminConsole(lambda: open_services(self.settings))


@pytest.fixture
async def shop(tmp_path: Path, console_store: str) -> AsyncIterator[Shop]:
    settings = console_settings(tmp_path / "data", console_store)
    (tmp_path / "data").mkdir()
    await asyncio.to_thread(migrate_store, settings, settings.data_dir)  # it runs a loop of its own
    async with open_services(settings) as services:
        shop = Shop(settings, services)
        await shop.create_user("admin@example.com", "admin")
        await shop.create_user("staff@example.com", "staff")
        await shop.create_user("customer@example.com", "customer")
        yield shop


@contextlib.asynccontextmanager
async def running(app: AdminConsole, size: tuple[int, int] = SIZE) -> AsyncIterator[Pilot[None]]:
    """The console at 80x24 (or ``size``), closed (session ended, store closed) after the test."""
    try:
        async with app.run_test(size=size) as pilot:
            yield pilot
    finally:
        await app.close_store()


async def wait_for(pilot: Pilot[Any], condition: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    async def check() -> Any:
        await pilot.pause()
        return condition()

    return await until_async(check, timeout=timeout, what=what)


async def sign_in(pilot: Pilot[Any], email: str, password: str = PASSWORD) -> None:
    app = pilot.app
    assert isinstance(app, AdminConsole)
    await wait_for(pilot, lambda: app.services is not None or app.store_problem, "the store to open")
    email_input = app.screen.query_one("#email", Input)
    email_input.focus()
    email_input.value = email
    await pilot.press("enter")  # on the email: to the password
    app.screen.query_one("#password", Input).value = password
    await pilot.press("enter")  # sign in


async def signed_in(pilot: Pilot[Any], email: str, password: str = PASSWORD) -> AdminConsole:
    await sign_in(pilot, email, password)
    app = pilot.app
    assert isinstance(app, AdminConsole)
    await wait_for(pilot, lambda: app.actor is not None, f"{email} to be signed in")
    return app

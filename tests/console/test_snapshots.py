"""What the console looks like at 80x24, compared with pictures a person has looked at
(tests/console/__snapshots__/test_snapshots/*.svg, test fixtures kept in git), and that it
still works in a terminal of 40x12.

A changed screen fails here until its new picture is accepted: look at the report pytest
names (snapshot_report.html), and if the change is meant, run this file again with
``--snapshot-update`` and commit the new .svg files.

The pictures must not change from run to run, so what differs between runs is fixed: the
data directory (a new temporary one each time) is shown as /srv/tillbox/data, the
disk's free space as 4096 MiB, and NO_COLOR is unset. snap_compare runs the app on a loop of its own (App.run),
so these tests are not coroutines and their store is made without the async ``shop``
fixture; SQLite only (a PostgreSQL store's label names its server).
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_textual_snapshot  # type: ignore[import-untyped]
from textual.pilot import Pilot
from textual.widgets import Static

from core.domain.oauth import ClientType, GrantType, OAuthClient
from core.domain.users import Actor, Role
from core.services.auth import CreateUser
from entrypoints.console.app import AdminConsole
from entrypoints.console.run import open_services
from entrypoints.console.screens.clients import ClientsScreen
from entrypoints.container import migrate_store
from entrypoints.settings import Settings
from tests.console.conftest import PASSWORD, console_settings, running, signed_in, wait_for

# pytest-textual-snapshot names its files by ``_file_extension``, which syrupy 7 no longer
# reads (it reads ``file_extension``): without this the pictures are saved as .raw files,
# which no viewer opens as the SVG they are. (Its release that pins syrupy 4 needs pytest < 9.)
pytest_textual_snapshot.SVGImageExtension.file_extension = "svg"

SnapCompare = Callable[..., bool]
FIXED_DATA_DIR = "/srv/tillbox/data"
MIB = 1024 * 1024


@pytest.fixture
def fixed_shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A migrated SQLite store with one staff account, its volatile figures fixed."""
    settings = console_settings(tmp_path / "data")
    settings.data_dir.mkdir()
    migrate_store(settings, settings.data_dir)

    async def create_staff() -> None:
        async with open_services(settings) as services:
            await services.auth.create_user(
                CreateUser(actor=Actor.operator(), email="staff@example.com", password=PASSWORD, role=Role.STAFF)
            )

    asyncio.run(create_staff())
    monkeypatch.setattr(AdminConsole, "store_label", lambda self: FIXED_DATA_DIR)
    # The pictures are in colour; a terminal's NO_COLOR (which Textual reads when the app is
    # made) would draw them in grey.
    monkeypatch.delenv("NO_COLOR", raising=False)
    fixed_disk = SimpleNamespace(total=8192 * MIB, used=4096 * MIB, free=4096 * MIB)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: fixed_disk)
    return settings


def console_on(settings: Settings) -> AdminConsole:
    return AdminConsole(lambda: open_services(settings))


async def store_open(pilot: Pilot[Any]) -> None:
    app = pilot.app
    assert isinstance(app, AdminConsole)
    await wait_for(pilot, lambda: app.services is not None, "the store to open")
    await wait_for(pilot, lambda: FIXED_DATA_DIR in message(app), "the sign-in screen to name the store")


async def on_the_dashboard(pilot: Pilot[Any]) -> None:
    app = await signed_in(pilot, "staff@example.com")
    await wait_for(pilot, lambda: re.search(r"store:\s+ok", health(app)), "the dashboard's figures")
    # The one line that names the time of the figures: fixed for the picture. Nothing
    # commits after the sign-in, so the figures are not read (and the line not made) again.
    app.screen.query_one("#status", Static).update("as of 12:00:00 UTC; follows the store")
    await pilot.pause()


def message(app: AdminConsole) -> str:
    return str(app.screen.query_one("#message", Static).render())


def health(app: AdminConsole) -> str:
    if app.current_mode != "dashboard":
        return ""
    return str(app.screen.query_one("#health", Static).render())


@pytest.fixture
def shop_with_clients(fixed_shop: Settings) -> Settings:
    """The fixed shop with an admin and three OAuth clients whose ids and times are fixed:
    written to the store as they are (ClientService would make new ids and take the time)."""
    at = datetime(2026, 1, 2, 9, 30, tzinfo=UTC)
    code, refresh, service = GrantType.AUTHORIZATION_CODE, GrantType.REFRESH_TOKEN, GrantType.CLIENT_CREDENTIALS
    clients = [
        (
            "cli_01JV3QC3D9S8V1R6F3G0H5J4M7",
            "Reports dashboard",
            ClientType.CONFIDENTIAL,
            (code, refresh),
            ("catalog:read", "orders:read", "audit:read"),
        ),
        ("cli_01JV3QC3D9S8V1R6F3G0H5J4M8", "Till app", ClientType.PUBLIC, (code,), ("catalog:read",)),
        ("cli_01JV3QC3D9S8V1R6F3G0H5J4M9", "Stock sync", ClientType.CONFIDENTIAL, (service,), ("catalog:write",)),
    ]

    async def fill() -> None:
        async with open_services(fixed_shop) as services:
            await services.auth.create_user(
                CreateUser(actor=Actor.operator(), email="admin@example.com", password=PASSWORD, role=Role.ADMIN)
            )
            async with services.store() as uow:
                for client_id, name, kind, grants, scopes in clients:
                    client = OAuthClient.register(
                        id=client_id,
                        name=name,
                        type=kind,
                        redirect_uris=(f"https://{name.split()[0].lower()}.example.com/cb",),
                        grant_types=grants,
                        scopes=scopes,
                        secret_digest="0" * 64 if kind is ClientType.CONFIDENTIAL else None,
                        at=at,
                        created_by=None,
                    )
                    await uow.oauth_clients.add(client)
                await uow.commit()

    asyncio.run(fill())
    return fixed_shop


async def on_the_clients(pilot: Pilot[Any]) -> None:
    app = await signed_in(pilot, "admin@example.com")
    await pilot.press("c")
    await wait_for(
        pilot,
        lambda: isinstance(app.screen, ClientsScreen) and app.screen.loads > 0 and len(app.screen.items) == 3,
        "the clients listed",
    )
    await pilot.pause()


def test_the_sign_in_screen(fixed_shop: Settings, snap_compare: SnapCompare) -> None:
    assert snap_compare(console_on(fixed_shop), terminal_size=(80, 24), run_before=store_open)


def test_the_dashboard_after_signing_in(fixed_shop: Settings, snap_compare: SnapCompare) -> None:
    assert snap_compare(console_on(fixed_shop), terminal_size=(80, 24), run_before=on_the_dashboard)


def test_the_oauth_clients(shop_with_clients: Settings, snap_compare: SnapCompare) -> None:
    assert snap_compare(console_on(shop_with_clients), terminal_size=(80, 24), run_before=on_the_clients)


async def test_a_40x12_terminal_signs_in_and_shows_the_dashboard(fixed_shop: Settings) -> None:
    app = console_on(fixed_shop)
    async with running(app, size=(40, 12)) as pilot:
        await store_open(pilot)
        await on_the_dashboard(pilot)
        assert app.size == (40, 12)
        await pilot.press("question_mark")  # the keys panel, in a screen too small for it
        await pilot.press("question_mark")
        await pilot.press("q")
    assert app.return_code == 0

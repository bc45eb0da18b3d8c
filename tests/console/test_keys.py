"""`k`, keys and settings (admins): a new signing key after a confirmation (it signs the
tokens issued from then on), the effective settings with every secret masked, and a backup
to a new file (SQLite's restore check accepts it) that never overwrites one."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from textual.pilot import Pilot
from textual.widgets import Input, Static

from adapters.sqlite.maintenance import inspect
from adapters.sqlite.migrations import LATEST_VERSION
from core.domain.users import Actor
from core.ports.repositories import AuditFilter
from core.services.audit import ListAuditEntries
from core.services.auth import LogIn
from entrypoints.console.app import AdminConsole
from entrypoints.console.context import ConsoleServices
from entrypoints.console.run import open_services
from entrypoints.console.screens.common import Form
from entrypoints.console.screens.dashboard import DashboardScreen
from entrypoints.console.screens.keys import KeysScreen
from tests.console.conftest import PASSWORD, Shop, console_settings, on_every_store, running, signed_in, wait_for
from tests.harness import until_async

pytestmark = on_every_store

STRIPE_SECRET = "sk_test_do_not_show_51Hx9aQ"


async def open_keys(pilot: Pilot[None], app: AdminConsole) -> KeysScreen:
    await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), "the dashboard")
    await pilot.press("k")
    await wait_for(pilot, lambda: isinstance(app.screen, KeysScreen), "keys and settings")
    screen = app.screen
    assert isinstance(screen, KeysScreen)
    return screen


async def signing_kid(services: ConsoleServices) -> str:
    """The key id in the header of an access token issued now."""
    tokens = await services.auth.login(LogIn(email="staff@example.com", password=PASSWORD))
    header = tokens.access_token.split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"])


async def rotations(shop: Shop) -> list[tuple[str | None, str | None]]:
    page = await shop.services.audit.list_entries(
        ListAuditEntries(actor=Actor.operator(), filter=AuditFilter(action="keys.rotated"))
    )
    return [(entry.object_id, entry.source_ip) for entry in page.items]


async def test_rotating_makes_a_new_key_sign_the_tokens_issued_from_then_on(shop: Shop) -> None:
    before = await signing_kid(shop.services)
    async with running(shop.console()) as pilot:
        app = await signed_in(pilot, "admin@example.com")
        screen = await open_keys(pilot, app)
        await pilot.press("r")
        await pilot.press("y")
        await wait_for(pilot, lambda: screen.last_result.startswith("new signing key"), "the new key")
        kid = screen.last_result.removeprefix("new signing key ")
    assert kid != before
    assert await rotations(shop) == [(kid, "console")]
    async with open_services(shop.settings) as fresh:  # services that read the keys anew
        # PostgreSQL's instances learn a new key before it signs (PUBLISH_DELAY, 5 s); SQLite's at once.
        assert await until_async(lambda: _signs(fresh, kid), timeout=20, what="the new key to sign")


async def _signs(services: ConsoleServices, kid: str) -> bool:
    return await signing_kid(services) == kid


async def test_a_rotation_not_confirmed_changes_nothing(shop: Shop) -> None:
    before = await signing_kid(shop.services)
    async with running(shop.console()) as pilot:
        app = await signed_in(pilot, "admin@example.com")
        screen = await open_keys(pilot, app)
        await pilot.press("r")
        await wait_for(pilot, lambda: not isinstance(app.screen, KeysScreen), "the question")
        await pilot.press("n")
        await wait_for(pilot, lambda: app.screen is screen, "the answer")
        assert screen.last_result == ""
    assert await rotations(shop) == []
    async with open_services(shop.settings) as fresh:
        assert await signing_kid(fresh) == before


async def test_the_settings_are_shown_with_every_secret_masked(shop: Shop) -> None:
    url = shop.settings["database"]["url"]
    settings = console_settings(shop.settings.data_dir, url, TILLBOX_STRIPE_SECRET_KEY=STRIPE_SECRET)
    app = AdminConsole(lambda: open_services(settings))
    async with running(app) as pilot:
        await signed_in(pilot, "admin@example.com")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), "the dashboard")
        health = str(app.screen.query_one("#health", Static).render())
        assert "payments: Stripe key configured, breaker closed in this console" in health
        screen = await open_keys(pilot, app)
        shown = str(screen.query_one("#settings", Static).render())
    assert 'secret_key = "********"  # environment TILLBOX_STRIPE_SECRET_KEY' in shown
    assert STRIPE_SECRET not in shown and "sk_test" not in shown
    assert 'webhook_secret = ""' in shown  # a secret left unset shows as unset
    assert f"dir = {json.dumps(settings['data']['dir'])}  # environment TILLBOX_DATA_DIR" in shown
    if url:  # PostgreSQL: the URL may hold a password
        assert 'url = "********"' in shown and url not in shown


async def fill_path(pilot: Pilot[None], app: AdminConsole, path: Path) -> None:
    await wait_for(pilot, lambda: isinstance(app.screen, Form), "the form")
    field = app.screen.query_one("#field-path", Input)
    field.focus()
    field.value = str(path)
    await pilot.press("enter")


async def test_a_backup_is_written_to_a_new_file_and_never_over_one(shop: Shop, tmp_path: Path) -> None:
    target = tmp_path / "backups" / "shop.bak"
    target.parent.mkdir()
    async with running(shop.console()) as pilot:
        app = await signed_in(pilot, "admin@example.com")
        screen = await open_keys(pilot, app)
        await pilot.press("b")
        await fill_path(pilot, app, target)
        await wait_for(pilot, lambda: screen.last_result.startswith("backed up"), "the backup", timeout=30)
        assert str(target) in screen.last_result
        written = target.read_bytes()

        await pilot.press("b")
        await fill_path(pilot, app, target)
        await wait_for(pilot, lambda: screen.last_result.startswith("backup refused"), "the refusal", timeout=30)
        assert "exists" in screen.last_result
    assert target.read_bytes() == written  # not overwritten
    assert sorted(p.name for p in target.parent.iterdir()) == ["shop.bak"]  # no partial file left
    if shop.settings["database"]["url"]:
        assert written.startswith(b"PGDMP")  # pg_dump's custom format, what `tillbox restore` reads
    else:
        assert inspect(target).schema_version == LATEST_VERSION


async def test_staff_cannot_open_keys_and_settings(shop: Shop) -> None:
    async with running(shop.console()) as pilot:
        app = await signed_in(pilot, "staff@example.com")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), "the dashboard")
        await pilot.press("k")
        await wait_for(pilot, lambda: any("Only admins" in n.message for n in app._notifications), "the refusal")
        assert app.current_mode == "dashboard"

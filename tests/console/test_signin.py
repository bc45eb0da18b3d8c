"""Signing in to the console: staff and admins only, through the API's login (its throttle
and audit entries, source `console`), and every refusal a message, never a traceback."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Static

from core.domain.users import Actor
from core.ports.repositories import AuditFilter
from core.services.audit import ListAuditEntries
from entrypoints.console.app import AdminConsole
from entrypoints.console.run import open_services
from tests.console.conftest import Shop, console_settings, on_every_store, running, sign_in, signed_in, wait_for

pytestmark = on_every_store


def message(app: AdminConsole) -> str:
    return str(app.screen.query_one("#message", Static).render())


async def audit_actions(shop: Shop, user_id: str) -> list[tuple[str, str | None]]:
    page = await shop.services.audit.list_entries(
        ListAuditEntries(actor=Actor.operator(), filter=AuditFilter(object_id=user_id))
    )
    return [(entry.action, entry.source_ip) for entry in page.items]


async def test_staff_sign_in_and_see_the_dashboard_with_the_login_audited_from_the_console(shop: Shop) -> None:
    async with running(shop.console()) as pilot:
        app = await signed_in(pilot, "staff@example.com")
        await wait_for(pilot, lambda: app.current_mode == "dashboard", "the dashboard")
        assert app.actor is not None and app.actor.user_id == shop.users["staff@example.com"]
        assert app.actor.source_ip == "console"
    assert ("auth.login_succeeded", "console") in await audit_actions(shop, shop.users["staff@example.com"])


async def test_a_wrong_password_is_refused_in_words_and_audited(shop: Shop) -> None:
    async with running(shop.console()) as pilot:
        await sign_in(pilot, "staff@example.com", "not the password at all")
        app = pilot.app
        assert isinstance(app, AdminConsole)
        await wait_for(pilot, lambda: "wrong" in message(app), "the refusal")
        assert app.actor is None and app.current_mode == "signin"
        assert "Email or password is wrong." in message(app)
    assert ("auth.login_failed", "console") in await audit_actions(shop, shop.users["staff@example.com"])


async def test_a_customer_account_is_refused_even_with_its_right_password(shop: Shop) -> None:
    async with running(shop.console()) as pilot:
        await sign_in(pilot, "customer@example.com")
        app = pilot.app
        assert isinstance(app, AdminConsole)
        await wait_for(pilot, lambda: "staff" in message(app), "the refusal")
        assert app.actor is None
    actions = await audit_actions(shop, shop.users["customer@example.com"])
    assert ("auth.login_refused", "console") in actions
    assert ("auth.login_succeeded", "console") not in actions  # no session was started


async def test_a_disabled_account_is_refused(shop: Shop) -> None:
    from core.domain.users import UserStatus
    from core.services.auth import UpdateUser

    await shop.services.auth.update_user(
        UpdateUser(actor=Actor.operator(), user_id=shop.users["staff@example.com"], status=UserStatus.DISABLED)
    )
    async with running(shop.console()) as pilot:
        await sign_in(pilot, "staff@example.com")
        app = pilot.app
        assert isinstance(app, AdminConsole)
        await wait_for(pilot, lambda: "disabled" in message(app), "the refusal")
        assert app.actor is None


async def test_keys_of_other_screens_do_nothing_before_sign_in(shop: Shop) -> None:
    async with running(shop.console()) as pilot:
        app = pilot.app
        assert isinstance(app, AdminConsole)
        await wait_for(pilot, lambda: app.services is not None, "the store to open")
        app.set_focus(None)
        await pilot.press("d")
        assert app.current_mode == "signin"


async def test_a_store_that_does_not_exist_is_said_on_the_sign_in_screen(tmp_path: Path, console_store: str) -> None:
    if console_store:
        url = console_store.rsplit("/", 1)[0] + "/tillbox_no_such_database"
        settings = console_settings(tmp_path / "data", url)
    else:
        settings = console_settings(tmp_path / "nowhere")
    app = AdminConsole(lambda: open_services(settings))
    async with running(app) as pilot:
        await wait_for(pilot, lambda: app.store_problem is not None, "the store's problem")
        assert "cannot be opened" in message(app)
        await sign_in(pilot, "staff@example.com")
        assert app.actor is None and app.current_mode == "signin"
    assert not (tmp_path / "nowhere").exists()  # nothing was created


async def test_a_store_at_a_newer_schema_is_said_and_left_as_it_is(tmp_path: Path, console_store: str) -> None:
    import asyncio
    import sqlite3

    import asyncpg

    from entrypoints.container import DATABASE_FILE, migrate_store
    from tests.postgres import create_database, drop_database

    # On PostgreSQL a database of its own: the session's shared one must stay at this version.
    url = create_database() if console_store else ""
    try:
        settings = console_settings(tmp_path / "data", url)
        (tmp_path / "data").mkdir()
        await asyncio.to_thread(migrate_store, settings, settings.data_dir)
        record = "INSERT INTO _migrations (version, name, applied_at) VALUES (999, 'from the future', '2030-01-01')"
        if url:
            conn = await asyncpg.connect(url)
            try:
                await conn.execute(record)
            finally:
                await conn.close()
        else:
            with sqlite3.connect(settings.data_dir / DATABASE_FILE) as db:
                db.execute(record)
        app = AdminConsole(lambda: open_services(settings))
        async with running(app) as pilot:
            await wait_for(pilot, lambda: app.store_problem is not None, "the store's problem")
            assert "newer than this Tillbox" in message(app)
            assert app.services is None
    finally:
        if url:
            drop_database(url)


async def test_a_sign_in_sent_before_the_store_is_open_goes_through_once_it_is(shop: Shop) -> None:
    import asyncio
    import contextlib
    from collections.abc import AsyncIterator

    from textual.widgets import Input

    from entrypoints.console.context import ConsoleServices

    opened = asyncio.Event()

    @contextlib.asynccontextmanager
    async def slow_store() -> AsyncIterator[ConsoleServices]:
        await opened.wait()
        async with open_services(shop.settings) as services:
            yield services

    app = AdminConsole(slow_store)
    async with running(app) as pilot:
        app.screen.query_one("#email", Input).value = "staff@example.com"
        app.screen.query_one("#password", Input).value = "correct battery horse staple"
        app.screen.set_focus(app.screen.query_one("#password", Input))
        await pilot.press("enter")
        await wait_for(pilot, lambda: "as soon as it is open" in message(app), "the promise")
        assert app.actor is None
        opened.set()
        await wait_for(pilot, lambda: app.actor is not None, "the sign-in once the store is open")
        assert app.current_mode == "dashboard"

"""`a`, the audit log: admins only, newest first, what the console did recorded with source
`console`, filters that narrow it (by actor id or email, action, object, type), and an entry
opened whole with its details."""

from __future__ import annotations

from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static

from core.domain.users import Actor, Role
from core.services.auth import UpdateUser
from entrypoints.console.app import AdminConsole
from entrypoints.console.screens.audit import AuditEntryScreen, AuditScreen
from entrypoints.console.screens.dashboard import DashboardScreen
from entrypoints.console.screens.keys import KeysScreen
from tests.console.conftest import Shop, on_every_store, running, signed_in, wait_for

pytestmark = on_every_store


async def open_audit(pilot: Pilot[None], app: AdminConsole) -> AuditScreen:
    await wait_for(pilot, lambda: app.current_mode != "signin", "the console")
    await pilot.press("a")
    await wait_for(pilot, lambda: isinstance(app.screen, AuditScreen) and app.screen.loads >= 1, "the log")
    screen = app.screen
    assert isinstance(screen, AuditScreen)
    return screen


async def filter_by(pilot: Pilot[None], screen: AuditScreen, text: str) -> None:
    loads = screen.loads
    field = screen.query_one("#filter", Input)
    field.focus()
    field.value = text
    await pilot.press("enter")
    await wait_for(pilot, lambda: screen.loads > loads, f"the log filtered by {text!r}")


async def make_role_change(shop: Shop) -> None:
    await shop.services.auth.update_user(
        UpdateUser(actor=Actor.operator(), user_id=shop.users["customer@example.com"], role=Role.STAFF)
    )


async def test_what_the_console_did_is_listed_newest_first_with_source_console(shop: Shop) -> None:
    async with running(shop.console()) as pilot:
        app = await signed_in(pilot, "admin@example.com")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), "the dashboard")
        await pilot.press("k")
        await wait_for(pilot, lambda: isinstance(app.screen, KeysScreen), "keys")
        await pilot.press("r")
        await pilot.press("y")
        keys = app.screen
        assert isinstance(keys, KeysScreen)
        await wait_for(pilot, lambda: keys.last_result.startswith("new signing key"), "the rotation")
        kid = keys.last_result.removeprefix("new signing key ")
        screen = await open_audit(pilot, app)

        actions = [(e.action, e.object_id, e.source_ip) for e in screen.items]
        admin = shop.users["admin@example.com"]
        assert actions[0] == ("keys.rotated", kid, "console")  # newest first
        assert ("auth.login_succeeded", admin, "console") in actions
        assert [e.id for e in screen.items] == sorted((e.id for e in screen.items), reverse=True)
        rotated = screen.items[0]
        assert screen.row(rotated)[1:] == ("admin@example.com", "keys.rotated", screen.row(rotated)[3], "console")
        assert screen.query_one(DataTable).row_count == len(screen.items)


async def test_filters_narrow_the_log(shop: Shop) -> None:
    await make_role_change(shop)
    customer = shop.users["customer@example.com"]
    admin = shop.users["admin@example.com"]
    async with running(shop.console()) as pilot:
        app = await signed_in(pilot, "admin@example.com")
        screen = await open_audit(pilot, app)
        assert {e.action for e in screen.items} >= {"user.created", "user.role_changed", "auth.login_succeeded"}

        await filter_by(pilot, screen, "actor:admin@example.com")
        assert screen.items and {e.actor_id for e in screen.items} == {admin}
        await filter_by(pilot, screen, f"actor:{admin}")
        assert screen.items and {e.actor_id for e in screen.items} == {admin}

        await filter_by(pilot, screen, "action:user.role_changed")
        assert [(e.action, e.object_id) for e in screen.items] == [("user.role_changed", customer)]

        await filter_by(pilot, screen, f"object:{customer}")
        assert {e.object_id for e in screen.items} == {customer}
        assert {e.action for e in screen.items} == {"user.created", "user.role_changed"}

        await filter_by(pilot, screen, f"type:user object:{customer} action:user.created")
        assert [e.action for e in screen.items] == ["user.created"]

        # Typed, after `/`: letters that are area keys elsewhere (k, a, d) go into the filter.
        screen.query_one(DataTable).focus()
        loads = screen.loads
        await pilot.press("slash", *"type", "colon", *"signing_key", "enter")
        await wait_for(pilot, lambda: screen.loads > loads, "the typed filter")
        assert app.current_mode == "audit" and screen.query_one("#filter", Input).value == "type:signing_key"
        assert screen.items == []
        assert "nothing here" in str(screen.query_one("#status", Static).render())

        # Words it cannot read, and an email nobody has: said, and the list stays as it was.
        field = screen.query_one("#filter", Input)
        field.focus()
        field.value = "who:me"
        await pilot.press("enter")
        await wait_for(pilot, lambda: any("who:me" in n.message for n in app._notifications), "the refusal")
        await filter_by(pilot, screen, "actor:nobody@example.com")
        assert any("nobody@example.com" in n.message or "No account" in n.message for n in app._notifications)
        assert screen.items == []
        assert screen.filter.object_type == "signing_key"  # the last filter that could be read


async def test_enter_opens_an_entry_with_its_details(shop: Shop) -> None:
    await make_role_change(shop)
    async with running(shop.console()) as pilot:
        app = await signed_in(pilot, "admin@example.com")
        screen = await open_audit(pilot, app)
        await filter_by(pilot, screen, "action:user.role_changed")
        screen.query_one(DataTable).focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, AuditEntryScreen), "the entry")
        shown = str(app.screen.query_one("#entry", Static).render())
        entry = screen.items[0]
        assert f"id          {entry.id}" in shown
        assert "action      user.role_changed" in shown
        assert f"object_id   {shop.users['customer@example.com']}" in shown
        assert "source_ip   cli" in shown  # the operator, at the command line
        assert '"after": "staff",\n  "before": "customer"' in shown
        await pilot.press("q")
        await wait_for(pilot, lambda: app.screen is screen, "back to the list")


async def test_staff_cannot_open_the_audit_log(shop: Shop) -> None:
    async with running(shop.console()) as pilot:
        app = await signed_in(pilot, "staff@example.com")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), "the dashboard")
        await pilot.press("a")
        await wait_for(pilot, lambda: any("Only admins" in n.message for n in app._notifications), "the refusal")
        assert app.current_mode == "dashboard" and not isinstance(app.screen, AuditScreen)

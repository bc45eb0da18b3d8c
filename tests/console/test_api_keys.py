"""`k`, the signed-in admin's personal API keys: listed with their last use, created after a
confirmation (the secret shown once, in a dialog), revoked after one; audited as `console`."""

from __future__ import annotations

from datetime import timedelta

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static

from core.domain.errors import TokenInvalid
from core.domain.users import Actor, Role
from core.services.api_keys import CreateApiKey, ListApiKeys
from entrypoints.console.app import AdminConsole
from entrypoints.console.screens.common import Confirm, Form
from entrypoints.console.screens.keys import SecretShown
from tests.console.conftest import Shop, on_every_store, running, signed_in, wait_for
from tests.console.test_keys import open_keys

pytestmark = on_every_store


async def fill(pilot: Pilot[None], app: AdminConsole, values: dict[str, str]) -> None:
    await wait_for(pilot, lambda: isinstance(app.screen, Form), "the form")
    for name, value in values.items():
        app.screen.query_one(f"#field-{name}", Input).value = value
    app.screen.query_one("#save").focus()
    await pilot.press("enter")


async def keys_of(shop: Shop, email: str) -> list[tuple[str, str | None]]:
    owner = shop.users[email]
    page = await shop.services.api_keys.list(ListApiKeys(actor=Actor.operator(), user_id=owner))
    return [(key.name, None if key.revoked_at is None else "revoked") for key in page.items]


async def test_an_admin_creates_a_key_sees_its_secret_once_and_it_works(shop: Shop) -> None:
    async with running(shop.console()) as pilot:
        app = await signed_in(pilot, "admin@example.com")
        screen = await open_keys(pilot, app)
        await wait_for(pilot, lambda: screen.key_loads >= 1, "the keys")
        assert screen.api_keys == []
        await pilot.press("plus")
        await fill(pilot, app, {"name": "stock export", "scopes": "catalog:read audit:read", "days": "30"})
        await wait_for(pilot, lambda: isinstance(app.screen, Confirm), "the question")
        assert app.screen.question == "Create the API key 'stock export' with catalog:read audit:read, for 30 days?"
        await pilot.press("y")
        await wait_for(pilot, lambda: isinstance(app.screen, SecretShown), "the secret")
        dialog = app.screen
        assert isinstance(dialog, SecretShown)
        secret = str(dialog.query_one("#secret", Static).render())
        assert secret.startswith("tbk_")
        assert screen.last_result == f"created API key {dialog.key.id}; its secret was shown once"
        assert secret not in screen.last_result
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.screen is screen, "the dialog to close")
        await wait_for(pilot, lambda: len(screen.api_keys) == 1, "the new key in the list")
        table = screen.query_one("#api-keys", DataTable)
        assert [str(cell) for cell in table.get_row_at(0)] == [
            dialog.key.id,
            "stock export",
            "active",
            dialog.key.expires_at.strftime("%Y-%m-%d"),
            "never",
            "catalog:read audit:read",
        ]
        assert secret not in str(screen.query_one("#settings", Static).render())
    actor = await shop.services.api_keys.authenticate(secret, "192.0.2.1")
    assert (actor.user_id, actor.scopes) == (shop.users["admin@example.com"], frozenset({"catalog:read", "audit:read"}))
    entries = await _audit(shop, "api_key.created")
    assert entries == [(shop.users["admin@example.com"], "console")]


async def test_a_key_not_confirmed_or_with_bad_input_is_not_made(shop: Shop) -> None:
    async with running(shop.console()) as pilot:
        app = await signed_in(pilot, "admin@example.com")
        screen = await open_keys(pilot, app)
        await pilot.press("plus")
        await fill(pilot, app, {"name": "nope"})
        await wait_for(pilot, lambda: isinstance(app.screen, Confirm), "the question")
        await pilot.press("n")
        await wait_for(pilot, lambda: app.screen is screen, "the answer")

        await pilot.press("plus")
        await fill(pilot, app, {"name": "x", "days": "soon"})
        await wait_for(pilot, lambda: screen.last_result.startswith("new API key:"), "the refusal")
        assert screen.last_result == "new API key: the days must be a whole number"

        await pilot.press("plus")
        await fill(pilot, app, {"name": "x", "scopes": "catalog:fly"})
        await wait_for(pilot, lambda: isinstance(app.screen, Confirm), "the question")
        await pilot.press("y")
        await wait_for(
            pilot, lambda: any("Unknown scope: catalog:fly" in n.message for n in app._notifications), "the refusal"
        )
        assert not isinstance(app.screen, SecretShown)
    assert await keys_of(shop, "admin@example.com") == []


async def test_an_admin_revokes_the_selected_key_after_confirming(shop: Shop) -> None:
    admin = Actor(user_id=shop.users["admin@example.com"], role=Role.ADMIN)
    made = await shop.services.api_keys.create(
        CreateApiKey(actor=admin, name="old script", scopes="catalog:read", expires_in=timedelta(days=7))
    )
    await shop.services.api_keys.authenticate(made.secret, None)  # a use, shown in the list
    async with running(shop.console()) as pilot:
        app = await signed_in(pilot, "admin@example.com")
        screen = await open_keys(pilot, app)
        await wait_for(pilot, lambda: len(screen.api_keys) == 1, "the key")
        row = [str(cell) for cell in screen.query_one("#api-keys", DataTable).get_row_at(0)]
        assert row[2] == "active" and row[4] != "never"
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, Confirm), "the question")
        await pilot.press("n")
        await wait_for(pilot, lambda: app.screen is screen, "the answer")
        assert await keys_of(shop, "admin@example.com") == [("old script", None)]

        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, Confirm), "the question")
        await pilot.press("y")
        await wait_for(pilot, lambda: screen.last_result == f"revoked API key {made.key.id}", "the revocation")
        await wait_for(
            pilot,
            lambda: [str(c) for c in screen.query_one("#api-keys", DataTable).get_row_at(0)][2] == "revoked",
            "the list to show it",
        )
        await pilot.press("x")
        await wait_for(pilot, lambda: screen.last_result.endswith("is revoked already"), "the answer")
    assert await keys_of(shop, "admin@example.com") == [("old script", "revoked")]
    with pytest.raises(TokenInvalid):
        await shop.services.api_keys.authenticate(made.secret, None)
    assert await _audit(shop, "api_key.revoked") == [(shop.users["admin@example.com"], "console")]


async def _audit(shop: Shop, action: str) -> list[tuple[str | None, str | None]]:
    from core.ports.repositories import AuditFilter
    from core.services.audit import ListAuditEntries

    page = await shop.services.audit.list_entries(
        ListAuditEntries(actor=Actor.operator(), filter=AuditFilter(action=action))
    )
    return [(entry.actor_id, entry.source_ip) for entry in page.items]

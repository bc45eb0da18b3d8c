"""`c`, the OAuth clients in the console: admins only (the key is refused to staff before any
screen shows), each change through ClientService, asked first, audited under the admin with
source `console`, and checked in the store afterwards; a secret shown once, in its own
dialog, and nowhere else (no notice, no log line), and the store's digest matching it."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, Label, Static

from core.domain.errors import InvalidClient, NotAllowed
from core.domain.oauth import ClientStatus, ClientType, GrantType, OAuthClient
from core.domain.users import Actor
from core.ports.repositories import AuditFilter
from core.services.audit import ListAuditEntries
from core.services.clients import ClientWithSecret, ListClients, RegisterClient
from entrypoints.console.screens.clients import ClientScreen, ClientsScreen, SecretShown
from tests.console.conftest import Shop, on_every_store, running, signed_in, wait_for
from tests.console.driving import (
    answer,
    console_of,
    fill,
    form_values,
    notices,
    open_area,
    pressed_and_read,
    said,
    select,
)

pytestmark = on_every_store

OPERATOR = Actor.operator()
CODE, REFRESH, SERVICE = GrantType.AUTHORIZATION_CODE, GrantType.REFRESH_TOKEN, GrantType.CLIENT_CREDENTIALS
REGISTER = {
    "name": "Reports",
    "type": "confidential",
    "redirect_uris": "https://reports.example.com/cb http://127.0.0.1:8765/cb",
    "grant_types": "authorization_code refresh_token",
    "scopes": "orders:read catalog:read",
}


async def registered(
    shop: Shop,
    name: str = "Reports",
    kind: ClientType = ClientType.CONFIDENTIAL,
    grants: tuple[GrantType, ...] = (CODE, REFRESH),
    scopes: tuple[str, ...] = ("catalog:read", "orders:read"),
) -> ClientWithSecret:
    return await shop.services.clients.register(
        RegisterClient(
            actor=OPERATOR,
            name=name,
            type=kind,
            redirect_uris=(f"https://{name.lower()}.example.com/cb",),
            grant_types=grants,
            scopes=scopes,
        )
    )


async def stored(shop: Shop, client_id: str) -> OAuthClient:
    return await shop.services.clients.get_client(OPERATOR, client_id)


async def every_client(shop: Shop) -> list[OAuthClient]:
    return list((await shop.services.clients.list_clients(ListClients(actor=OPERATOR))).items)


async def audited(shop: Shop, client_id: str | None = None) -> list[tuple[str, str | None, str | None, Any]]:
    """(action, source, actor, details) of the entries about OAuth clients, oldest first."""
    page = await shop.services.audit.list_entries(
        ListAuditEntries(actor=OPERATOR, filter=AuditFilter(object_type="oauth_client", object_id=client_id))
    )
    return [(e.action, e.source_ip, e.actor_id, e.details) for e in reversed(page.items)]


async def clients_screen(pilot: Pilot[Any]) -> ClientsScreen:
    await signed_in(pilot, "admin@example.com")
    return await open_area(pilot, "c", ClientsScreen)


async def shown_secret(pilot: Pilot[Any]) -> str:
    """The secret the dialog that opens shows, once it has been closed (Enter on its button)."""
    app = console_of(pilot)
    dialog = await wait_for(pilot, lambda: isinstance(app.screen, SecretShown) and app.screen, "the secret's dialog")
    assert isinstance(dialog, SecretShown)
    assert str(dialog.query_one("#secret", Static).render()) == dialog.secret
    said_there = " ".join(str(label.render()) for label in dialog.query(Label))
    assert "This secret will not be shown again: store it now." in said_there
    await pilot.press("enter")
    await wait_for(pilot, lambda: app.screen is not dialog, "the dialog to close")
    return dialog.secret


async def action_ended(pilot: Pilot[Any], screen: ClientsScreen | ClientScreen, done: int) -> None:
    await wait_for(pilot, lambda: screen.actions_done > done, "the action to end")


# Who may open it.
async def test_staff_pressing_c_are_refused_and_never_see_the_clients(shop: Shop) -> None:
    await registered(shop)
    async with running(shop.console()) as pilot:
        app = await signed_in(pilot, "staff@example.com")
        await wait_for(pilot, lambda: app.current_mode == "dashboard", "the dashboard")
        await pilot.press("c")
        await said(pilot, "Only admins can open Clients.")
        assert app.current_mode == "dashboard"
        assert not any(isinstance(screen, ClientsScreen) for screen in app.screen_stack)
        # And the service itself refuses them, whatever a screen would do.
        with pytest.raises(NotAllowed):
            await app.require_services().clients.list_clients(ListClients(actor=app.require_actor()))


# The list.
async def test_admins_see_every_client_and_filter_them_by_status(shop: Shop) -> None:
    reports = (await registered(shop)).client
    app = (await registered(shop, "App", ClientType.PUBLIC, (CODE,), ("catalog:read",))).client
    sync = (await registered(shop, "Sync", grants=(SERVICE,), scopes=("catalog:write",))).client
    await shop.services.clients.disable(OPERATOR, sync.id)
    async with running(shop.console()) as pilot:
        screen = await clients_screen(pilot)
        assert [tuple(screen.row(client)) for client in screen.items] == [
            (f"cli_…{reports.id[-6:]}", "Reports", "conf", "active", "code rt", "catalog:read ord…"),
            (f"cli_…{app.id[-6:]}", "App", "public", "active", "code", "catalog:read"),
            (f"cli_…{sync.id[-6:]}", "Sync", "conf", "disabled", "cc", "catalog:write"),
        ]
        assert str(screen.query_one("#status", Static).render()) == "page 1: 3 shown"

        async def names(text: str) -> list[str]:
            await pilot.press("slash")
            screen.query_one("#filter", Input).value = text
            await pressed_and_read(pilot, screen, "enter")
            return [client.name for client in screen.items]

        assert await names("status:disabled") == ["Sync"]
        assert await names("STATUS:Active") == ["Reports", "App"]
        assert await names("") == ["Reports", "App", "Sync"]
        await pilot.press("slash")
        screen.query_one("#filter", Input).value = "status:gone"
        await pilot.press("enter")
        await said(pilot, "Filter: status: is active or disabled")
        screen.query_one("#filter", Input).value = "name:App"
        await pilot.press("enter")
        await said(pilot, "Filter: 'name:App': filter by status:active or status:disabled")
        assert [client.name for client in screen.items] == ["Reports", "App", "Sync"]


async def test_the_list_is_paged(shop: Shop) -> None:
    made = [(await registered(shop, f"Client{n:02d}")).client for n in range(17)]
    async with running(shop.console()) as pilot:
        screen = await clients_screen(pilot)
        assert [c.id for c in screen.items] == [c.id for c in made[:15]]
        await pressed_and_read(pilot, screen, "n")
        assert [c.id for c in screen.items] == [c.id for c in made[15:]]
        assert str(screen.query_one("#status", Static).render()) == "page 2: 2 shown, b: previous"


async def test_enter_shows_a_client_whole(shop: Shop) -> None:
    client = (await registered(shop)).client
    async with running(shop.console()) as pilot:
        screen = await clients_screen(pilot)
        await select(pilot, screen, client.id)
        await pilot.press("enter")
        app = console_of(pilot)
        shown = await wait_for(
            pilot, lambda: isinstance(app.screen, ClientScreen) and app.screen.loads and app.screen, "it"
        )
        text = str(shown.query_one("#detail", Static).render())
        at = client.created_at.astimezone().strftime("%Y-%m-%d %H:%M")
        assert text.splitlines() == [
            f"id             {client.id}",
            "name           Reports",
            "type           confidential",
            "status         active",
            "",
            "redirect URIs  https://reports.example.com/cb",
            "grant types    authorization_code refresh_token",
            "scopes         catalog:read orders:read",
            "",
            f"secret made    {at}",
            f"created        {at} by the operator",
            f"updated        {at}",
        ]
        assert client.secret_digest is not None and client.secret_digest not in text
        await pilot.press("q")
        await wait_for(pilot, lambda: app.screen is screen, "the list again")


# Registering.
async def test_an_admin_registers_a_confidential_client_and_sees_its_secret_once(
    shop: Shop, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    admin = shop.users["admin@example.com"]
    async with running(shop.console()) as pilot:
        screen = await clients_screen(pilot)
        await pilot.press("+")
        await fill(pilot, REGISTER)
        assert await answer(pilot) == "Register Reports, a confidential client? Its secret is shown once."
        secret = await shown_secret(pilot)
        [client] = await every_client(shop)
        await said(pilot, f"Registered Reports ({client.id}).")
        await wait_for(pilot, lambda: [c.id for c in screen.items] == [client.id], "the new client listed")
        assert not any(isinstance(s, SecretShown) for s in console_of(pilot).screen_stack)
        assert not [n for n in notices(pilot) if secret in n]
    assert secret.startswith("tbcs_") and len(secret) == 48
    assert (client.name, client.type, client.status) == ("Reports", ClientType.CONFIDENTIAL, ClientStatus.ACTIVE)
    assert client.redirect_uris == ("https://reports.example.com/cb", "http://127.0.0.1:8765/cb")
    assert (client.grant_types, client.scopes) == ((CODE, REFRESH), ("catalog:read", "orders:read"))
    assert client.created_by == admin
    # The store keeps the secret's digest, not the secret: the secret shown authenticates the client.
    assert client.secret_digest is not None and secret not in client.secret_digest
    assert (await shop.services.clients.authenticate(client.id, secret)).id == client.id
    with pytest.raises(InvalidClient):
        await shop.services.clients.authenticate(client.id, secret + "x")
    assert await audited(shop, client.id) == [
        (
            "oauth_client.registered",
            "console",
            admin,
            {
                "name": "Reports",
                "type": "confidential",
                "redirect_uris": ["https://reports.example.com/cb", "http://127.0.0.1:8765/cb"],
                "grant_types": ["authorization_code", "refresh_token"],
                "scopes": ["catalog:read", "orders:read"],
            },
        )
    ]
    logging.getLogger("tillbox.console").debug("captured")  # what the console logs is captured here
    assert "captured" in [r.getMessage() for r in caplog.records]
    assert not [r for r in caplog.records if secret in r.getMessage() or secret in str(r.__dict__)]


async def test_a_public_client_is_registered_without_a_secret(shop: Shop) -> None:
    async with running(shop.console()) as pilot:
        await clients_screen(pilot)
        await pilot.press("+")
        await fill(pilot, {**REGISTER, "name": "Till app", "type": "Public", "grant_types": "authorization_code"})
        assert await answer(pilot) == "Register Till app, a public client?"
        await said(pilot, "Registered Till app")
        assert not any(isinstance(s, SecretShown) for s in console_of(pilot).screen_stack)
    [client] = await every_client(shop)
    assert (client.type, client.secret_digest, client.secret_rotated_at) == (ClientType.PUBLIC, None, None)
    assert (await shop.services.clients.authenticate(client.id, None)).id == client.id


@pytest.mark.parametrize(
    ("uris", "refusal"),
    [
        (
            "https://reports.example.com/cb#done",
            "redirect_uris[0] (https://reports.example.com/cb#done): must not have a fragment (#...)",
        ),
        (
            "https://ok.example.com/cb http://reports.example.com/cb",
            "redirect_uris[1] (http://reports.example.com/cb): must be https"
            " (http only on a loopback host: 127.0.0.1, [::1], localhost)",
        ),
        ("", "redirect_uris: must have at least one redirect URI"),
    ],
)
async def test_a_bad_redirect_uri_is_refused_with_its_reason_and_nothing_is_written(
    shop: Shop, uris: str, refusal: str
) -> None:
    async with running(shop.console()) as pilot:
        await clients_screen(pilot)
        await pilot.press("+")
        await fill(pilot, {**REGISTER, "redirect_uris": uris})
        await answer(pilot)
        assert await said(pilot, "New client: refused") == f"New client: refused: {refusal}"
        assert not any(isinstance(s, SecretShown) for s in console_of(pilot).screen_stack)
    assert await every_client(shop) == []
    assert await audited(shop) == []


async def test_every_wrong_field_is_named_at_once(shop: Shop) -> None:
    async with running(shop.console()) as pilot:
        await clients_screen(pilot)
        await pilot.press("+")
        await fill(pilot, {**REGISTER, "name": " ", "grant_types": "refresh_token", "scopes": "orders:read shop:all"})
        assert await answer(pilot) == "Register a confidential client with no name? Its secret is shown once."
        assert await said(pilot, "New client: refused") == (
            "New client: refused: name: must not be empty; grant_types: refresh_token needs authorization_code;"
            " scopes: has unknown scopes: shop:all"
        )
    assert await every_client(shop) == []


@pytest.mark.parametrize(
    ("values", "refusal"),
    [
        ({"type": "secret"}, "type: is one of confidential, public"),
        (
            {"grant_types": "authorization_code password"},
            "grant types: password unknown (they are authorization_code refresh_token client_credentials)",
        ),
    ],
)
async def test_a_type_or_grant_the_console_cannot_read_asks_nothing_and_writes_nothing(
    shop: Shop, values: dict[str, str], refusal: str
) -> None:
    async with running(shop.console()) as pilot:
        screen = await clients_screen(pilot)
        done = screen.actions_done
        await pilot.press("+")
        await fill(pilot, {**REGISTER, **values})
        await action_ended(pilot, screen, done)
        assert await said(pilot, "not registered") == f"New client: not registered: {refusal}"
    assert await every_client(shop) == []


async def test_a_registration_not_confirmed_writes_nothing(shop: Shop) -> None:
    async with running(shop.console()) as pilot:
        screen = await clients_screen(pilot)
        done = screen.actions_done
        await pilot.press("+")
        await fill(pilot, REGISTER)
        await answer(pilot, yes=False)
        await action_ended(pilot, screen, done)
    assert await every_client(shop) == []
    assert await audited(shop) == []


# Disabling and enabling.
async def test_a_disable_confirmed_stops_the_client_and_enable_brings_it_back(shop: Shop) -> None:
    made = await registered(shop)
    client, secret = made.client, made.secret
    assert secret is not None
    admin = shop.users["admin@example.com"]
    async with running(shop.console()) as pilot:
        screen = await clients_screen(pilot)
        await select(pilot, screen, client.id)
        await pilot.press("s")
        assert await answer(pilot) == "Disable Reports? It gets no tokens, and its sessions end now."
        await said(pilot, "Reports is disabled.")
        await wait_for(pilot, lambda: screen.items[0].status is ClientStatus.DISABLED, "the list to say so")
        assert (await stored(shop, client.id)).status is ClientStatus.DISABLED
        with pytest.raises(InvalidClient):
            await shop.services.clients.authenticate(client.id, secret)
        await pilot.press("s")
        assert await answer(pilot) == "Enable Reports again? It can get tokens."
        await said(pilot, "Reports is active.")
    assert (await stored(shop, client.id)).status is ClientStatus.ACTIVE
    assert (await shop.services.clients.authenticate(client.id, secret)).id == client.id
    assert [entry[:3] for entry in await audited(shop, client.id)] == [
        ("oauth_client.registered", "cli", None),
        ("oauth_client.disabled", "console", admin),
        ("oauth_client.enabled", "console", admin),
    ]


async def test_a_disable_not_confirmed_changes_nothing(shop: Shop) -> None:
    client = (await registered(shop)).client
    async with running(shop.console()) as pilot:
        screen = await clients_screen(pilot)
        await select(pilot, screen, client.id)
        done = screen.actions_done
        await pilot.press("s")
        await answer(pilot, yes=False)
        await action_ended(pilot, screen, done)
        assert not [n for n in notices(pilot) if "disabled" in n]
    assert await stored(shop, client.id) == client
    assert [entry[0] for entry in await audited(shop, client.id)] == ["oauth_client.registered"]


# New secrets.
async def test_a_new_secret_is_shown_once_and_the_old_one_stops_working(
    shop: Shop, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    made = await registered(shop)
    client, old = made.client, made.secret
    assert old is not None
    async with running(shop.console()) as pilot:
        screen = await clients_screen(pilot)
        await select(pilot, screen, client.id)
        await pilot.press("r")
        assert await answer(pilot) == "Make a new secret for Reports? The old one stops working now."
        new = await shown_secret(pilot)
        await said(pilot, "Reports has a new secret; the old one no longer works.")
        assert not [n for n in notices(pilot) if new in n]
    assert new != old and new.startswith("tbcs_")
    with pytest.raises(InvalidClient):
        await shop.services.clients.authenticate(client.id, old)
    assert (await shop.services.clients.authenticate(client.id, new)).id == client.id
    rotated = await stored(shop, client.id)
    assert rotated.secret_digest != client.secret_digest
    assert rotated.secret_rotated_at is not None and client.secret_rotated_at is not None
    assert rotated.secret_rotated_at >= client.secret_rotated_at
    assert (await audited(shop, client.id))[-1] == (
        "oauth_client.secret_rotated",
        "console",
        shop.users["admin@example.com"],
        {},
    )
    logging.getLogger("tillbox.console").debug("captured")  # what the console logs is captured here
    assert "captured" in [r.getMessage() for r in caplog.records]
    assert not [r for r in caplog.records if new in r.getMessage() or new in str(r.__dict__)]


async def test_a_new_secret_not_confirmed_keeps_the_old_one(shop: Shop) -> None:
    made = await registered(shop)
    assert made.secret is not None
    async with running(shop.console()) as pilot:
        screen = await clients_screen(pilot)
        await select(pilot, screen, made.client.id)
        done = screen.actions_done
        await pilot.press("r")
        await answer(pilot, yes=False)
        await action_ended(pilot, screen, done)
        assert not any(isinstance(s, SecretShown) for s in console_of(pilot).screen_stack)
    assert await stored(shop, made.client.id) == made.client
    assert (await shop.services.clients.authenticate(made.client.id, made.secret)).id == made.client.id


async def test_a_public_client_is_given_no_secret(shop: Shop) -> None:
    client = (await registered(shop, "App", ClientType.PUBLIC, (CODE,))).client
    async with running(shop.console()) as pilot:
        screen = await clients_screen(pilot)
        await select(pilot, screen, client.id)
        await pilot.press("r")
        await said(pilot, "Secret: App is a public client: it has no secret.")
    assert await stored(shop, client.id) == client
    assert [entry[0] for entry in await audited(shop, client.id)] == ["oauth_client.registered"]


# Editing.
async def test_an_admin_edits_name_redirect_uris_grants_and_scopes(shop: Shop) -> None:
    client = (await registered(shop)).client
    admin = shop.users["admin@example.com"]
    async with running(shop.console()) as pilot:
        screen = await clients_screen(pilot)
        await select(pilot, screen, client.id)
        await pilot.press("e")
        assert await form_values(pilot) == {
            "name": "Reports",
            "redirect_uris": "https://reports.example.com/cb",
            "grant_types": "authorization_code refresh_token",
            "scopes": "catalog:read orders:read",
        }
        await fill(
            pilot,
            {
                "name": "Reports v2",
                "redirect_uris": "https://reports.example.com/cb https://reports.example.com/v2",
                "grant_types": "authorization_code",
                "scopes": "catalog:read",
            },
        )
        question = await answer(pilot)
        assert question == "Save Reports: name, redirect uris, grant types, scopes? Fewer scopes: its sessions end now."
        await said(pilot, "Saved Reports v2.")
    edited = await stored(shop, client.id)
    assert (edited.name, edited.redirect_uris, edited.grant_types, edited.scopes) == (
        "Reports v2",
        ("https://reports.example.com/cb", "https://reports.example.com/v2"),
        (CODE,),
        ("catalog:read",),
    )
    assert (await audited(shop, client.id))[-1] == (
        "oauth_client.updated",
        "console",
        admin,
        {
            "name": {"before": "Reports", "after": "Reports v2"},
            "redirect_uris": {
                "before": ["https://reports.example.com/cb"],
                "after": ["https://reports.example.com/cb", "https://reports.example.com/v2"],
            },
            "grant_types": {"before": ["authorization_code", "refresh_token"], "after": ["authorization_code"]},
            "scopes": {"before": ["catalog:read", "orders:read"], "after": ["catalog:read"]},
        },
    )


async def test_an_edit_with_a_bad_redirect_uri_changes_nothing(shop: Shop) -> None:
    client = (await registered(shop)).client
    async with running(shop.console()) as pilot:
        screen = await clients_screen(pilot)
        await select(pilot, screen, client.id)
        await pilot.press("e")
        await fill(pilot, {"name": "Renamed", "redirect_uris": "http://reports.example.com/cb"})
        await answer(pilot)
        assert await said(pilot, "Edit: refused") == (
            "Edit: refused: redirect_uris[0] (http://reports.example.com/cb): must be https"
            " (http only on a loopback host: 127.0.0.1, [::1], localhost)"
        )
    assert await stored(shop, client.id) == client
    assert [entry[0] for entry in await audited(shop, client.id)] == ["oauth_client.registered"]


async def test_an_edit_that_changes_nothing_asks_nothing(shop: Shop) -> None:
    client = (await registered(shop)).client
    async with running(shop.console()) as pilot:
        screen = await clients_screen(pilot)
        await select(pilot, screen, client.id)
        await pilot.press("e")
        await fill(pilot, {"scopes": "orders:read catalog:read"})  # the same, in another order
        await said(pilot, "Nothing was changed.")
    assert await stored(shop, client.id) == client


# From the client's own screen.
async def test_the_clients_screen_disables_it_and_shows_it_disabled(shop: Shop) -> None:
    client = (await registered(shop)).client
    async with running(shop.console()) as pilot:
        screen = await clients_screen(pilot)
        await select(pilot, screen, client.id)
        await pilot.press("enter")
        app = console_of(pilot)
        shown = await wait_for(
            pilot, lambda: isinstance(app.screen, ClientScreen) and app.screen.loads and app.screen, "it"
        )
        await pilot.press("s")
        assert await answer(pilot) == "Disable Reports? It gets no tokens, and its sessions end now."
        await wait_for(
            pilot, lambda: "status         disabled" in str(shown.query_one("#detail", Static).render()), "it disabled"
        )
    assert (await stored(shop, client.id)).status is ClientStatus.DISABLED

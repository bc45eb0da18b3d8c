"""Signing in with keys typed ahead, as a password manager types them: every key queued at
once, before the console has handled the first. (Pilot's ``press`` waits after each key, so
these tests queue the key events themselves; tests/binary/smoke.py types so in tmux.)"""

from __future__ import annotations

from textual import events
from textual.keys import _character_to_key
from textual.widgets import Input

from entrypoints.console.app import AdminConsole
from tests.console.conftest import PASSWORD, Shop, on_every_store, running, wait_for

pytestmark = on_every_store


def typed(text: str) -> list[events.Key]:
    return [events.Key(char if char.isalnum() else _character_to_key(char), char) for char in text]


def queue_at_once(app: AdminConsole, keys: list[events.Key]) -> None:
    for key in keys:
        app.post_message(key)


async def test_email_tab_password_enter_typed_at_once_signs_in(shop: Shop) -> None:
    async with running(shop.console()) as pilot:
        app = pilot.app
        assert isinstance(app, AdminConsole)
        await wait_for(pilot, lambda: app.services is not None, "the store to open")
        keys = [*typed("staff@example.com"), events.Key("tab", "\t"), *typed(PASSWORD), events.Key("enter", "\r")]
        queue_at_once(app, keys)
        await wait_for(pilot, lambda: app.actor is not None, "staff to be signed in")
        assert app.actor is not None and app.actor.user_id == shop.users["staff@example.com"]


async def test_email_enter_password_enter_typed_at_once_never_puts_the_password_in_the_email_field(
    shop: Shop,
) -> None:
    async with running(shop.console()) as pilot:
        app = pilot.app
        assert isinstance(app, AdminConsole)
        await wait_for(pilot, lambda: app.services is not None, "the store to open")
        email = app.screen.query_one("#email", Input)
        keys = [
            *typed("staff@example.com"),
            events.Key("enter", "\r"),
            *typed("not the password"),
            events.Key("enter", "\r"),
        ]
        queue_at_once(app, keys)
        await wait_for(pilot, lambda: "wrong" in str(app.screen.query_one("#message").render()), "the refusal")
        assert email.value == "staff@example.com"
        assert app.actor is None

"""A form filled with keys typed ahead, as a script or a paste sends them: every key queued
at once. Enter in the last field saves only once the keys before it are in the fields (a
priority binding runs as its key arrives, ahead of keys still waiting in a field's queue)."""

from __future__ import annotations

from typing import Any

from textual import events
from textual.app import App

from entrypoints.console.screens.common import Form
from tests.console.conftest import wait_for
from tests.console.test_signin_typed_ahead import typed

SENTENCE = "Refunded from the console, as the customer asked on the phone"


class FormApp(App[None]):
    def __init__(self) -> None:
        super().__init__()
        self.result: Any = "not yet"

    def on_mount(self) -> None:
        form = Form("Refund", [("amount", "Amount", "12.50 USD", False), ("reason", "Reason", "", False)])
        self.push_screen(form, callback=self._done)

    def _done(self, values: Any) -> None:
        self.result = values


async def test_a_whole_sentence_and_enter_sent_at_once_are_saved_whole() -> None:
    app = FormApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, Form), "the form")
        for key in [events.Key("enter", "\r"), *typed(SENTENCE), events.Key("enter", "\r")]:
            app.post_message(key)
        await wait_for(pilot, lambda: app.result != "not yet", "the form to be saved")
    assert app.result == {"amount": "12.50 USD", "reason": SENTENCE}


async def sent_at_once(app: FormApp, pilot: Any, keys: list[events.Key]) -> Any:
    await wait_for(pilot, lambda: isinstance(app.screen, Form), "the form")
    for key in keys:
        app.post_message(key)
    await wait_for(pilot, lambda: app.result != "not yet", "the form to be saved")
    return app.result


ENTER = events.Key("enter", "\r")
TAB = events.Key("tab", "\t")
SHIFT_TAB = events.Key("shift+tab", None)


async def test_typing_in_a_field_shown_with_a_value_replaces_it() -> None:
    # As in a browser: entering a field selects what it shows (at mount, by Enter or Tab), so
    # a partial refund is "x", the amount, Enter, the reason, Enter, and never "12.50 USD40".
    app = FormApp()
    async with app.run_test(size=(80, 24)) as pilot:
        result = await sent_at_once(app, pilot, [*typed("4.00"), ENTER, *typed("Part"), ENTER])
    assert result == {"amount": "4.00", "reason": "Part"}


async def test_tab_back_into_a_field_selects_it_too_and_enter_keeps_a_value() -> None:
    app = FormApp()
    async with app.run_test(size=(80, 24)) as pilot:
        keys = [TAB, *typed("Why"), SHIFT_TAB, *typed("3"), TAB, ENTER]
        result = await sent_at_once(app, pilot, keys)
    assert result == {"amount": "3", "reason": "Why"}  # Tab into "Why" selected it; Enter saved

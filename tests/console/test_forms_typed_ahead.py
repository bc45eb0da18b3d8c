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

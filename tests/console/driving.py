"""Driving the console's screens as staff do: open an area by its key, put the cursor on a row,
fill a form, answer a confirmation; and what the console said (its notifications)."""

from __future__ import annotations

from typing import Any, TypeVar

from textual.pilot import Pilot
from textual.widgets import DataTable, Input

from entrypoints.console.app import AdminConsole
from entrypoints.console.screens.common import Confirm, Form, ListScreen
from tests.console.conftest import wait_for

S = TypeVar("S", bound=ListScreen[Any])


def console_of(pilot: Pilot[Any]) -> AdminConsole:
    assert isinstance(pilot.app, AdminConsole)
    return pilot.app


async def open_area(pilot: Pilot[Any], key: str, screen: type[S]) -> S:
    """Press the area's key; the area's list once it has been read."""
    app = console_of(pilot)
    await pilot.press(key)
    shown = await wait_for(pilot, lambda: isinstance(app.screen, screen) and app.screen.loads > 0 and app.screen, key)
    assert isinstance(shown, screen)
    return shown


async def pressed_and_read(pilot: Pilot[Any], screen: ListScreen[Any], *keys: str) -> None:
    """Press these keys, then wait until the list has been read again since."""
    seen = screen.loads
    await pilot.press(*keys)
    await wait_for(pilot, lambda: screen.loads > seen, "the list to be read again")


async def select(pilot: Pilot[Any], screen: ListScreen[Any], item_id: str) -> None:
    """The cursor on the row of this item (the list must show it)."""
    await wait_for(pilot, lambda: item_id in [screen.key(item) for item in screen.items], f"{item_id} in the list")
    keys = [screen.key(item) for item in screen.items]
    table = screen.query_one(DataTable)
    table.move_cursor(row=keys.index(item_id))
    await wait_for(pilot, lambda: screen.current() is not None and screen.key(screen.current()) == item_id, "cursor")


async def fill(pilot: Pilot[Any], values: dict[str, str]) -> None:
    """In the form that opens: type these values (the others stay as they are) and save with
    Enter in its last field."""
    app = console_of(pilot)
    form = await wait_for(pilot, lambda: isinstance(app.screen, Form) and app.screen, "the form")
    for name, value in values.items():
        form.query_one(f"#field-{name}", Input).value = value
    last = list(form.query(Input))[-1]
    last.focus()
    await pilot.press("enter")
    await wait_for(pilot, lambda: app.screen is not form, "the form to close")


async def form_values(pilot: Pilot[Any]) -> dict[str, str]:
    """What the form that opens shows (it stays open)."""
    app = console_of(pilot)
    form = await wait_for(pilot, lambda: isinstance(app.screen, Form) and app.screen, "the form")
    assert isinstance(form, Form)
    return form.values()


async def answer(pilot: Pilot[Any], yes: bool = True) -> str:
    """Answer the confirmation that opens; its question."""
    app = console_of(pilot)
    confirm = await wait_for(pilot, lambda: isinstance(app.screen, Confirm) and app.screen, "the confirmation")
    assert isinstance(confirm, Confirm)
    await pilot.press("y" if yes else "n")
    await wait_for(pilot, lambda: app.screen is not confirm, "the confirmation to close")
    return confirm.question


def notices(pilot: Pilot[Any]) -> list[str]:
    """What the console has said (title and message) and still shows."""
    return [f"{n.title}: {n.message}" for n in console_of(pilot)._notifications]


async def said(pilot: Pilot[Any], words: str) -> str:
    """The first notice with these words in it, once shown."""
    return str(
        await wait_for(
            pilot, lambda: next((n for n in notices(pilot) if words in n), None), f"a notice saying {words!r}"
        )
    )

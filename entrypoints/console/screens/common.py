"""What every screen of the console shares: a paged, filterable list that follows the store,
a confirmation before anything changes money or access, and a small form.

A list screen shows one page at a time (keyset cursors from the services, as the API pages),
`n` and `b` go to the next and the previous page, `/` focuses its filter, `r` reads again.
When the store changes (the app's watch of its change counter) the page on screen is read
again in a worker, so lists stay live without a key pressed and the interface never waits.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, cast

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widget import Widget
from textual.widgets import Button, DataTable, Footer, Input, Label, Static

from core.domain.pagination import Page, PageRequest

if TYPE_CHECKING:
    from entrypoints.console.app import AdminConsole

T = TypeVar("T")
R = TypeVar("R")

#: How long after a failed read the list reads again, once.
READ_AGAIN_SECONDS = 1.0

#: Rows per page: what fits an 80x24 terminal under the title, filter and footer.
PAGE_SIZE = 15


#: Tab and Shift+Tab for a screen of fields: priority bindings, so that the focus moves as the
#: key is read and keys typed ahead (a paste, a password manager) land in the next field.
FIELD_FOCUS_KEYS: list[BindingType] = [
    Binding("tab", "focus_field(1)", "Next field", show=False, priority=True),
    Binding("shift+tab", "focus_field(-1)", "Previous field", show=False, priority=True),
]


def enter_field(screen: Screen[Any], widget: Widget | None) -> None:
    """Focus ``widget`` at once and, an Input, select its text, as a browser does when Tab
    enters a field: what is typed next replaces a value shown there (an amount, a price),
    and Enter keeps it. Both at once, as the key that moved here is read: select-on-focus
    would come with the focus event, after keys typed ahead, and select (then replace) them."""
    screen.set_focus(widget)
    if isinstance(widget, Input):
        widget.select_all()


class FieldFocus:
    """``focus_field``: the action of FIELD_FOCUS_KEYS, for a screen of fields."""

    def action_focus_field(self, step: int) -> None:
        screen = cast(Screen[Any], self)
        if step > 0:
            screen.focus_next()
        else:
            screen.focus_previous()
        enter_field(screen, screen.focused)


class StoreChanged(Message):
    """Sent to the current screen when the store changed since the console last looked."""


class ConsoleScreen(Screen[R]):
    """A screen of the console: ``console`` is the app with its services and signed-in actor."""

    @property
    def console(self) -> AdminConsole:
        return self.app  # type: ignore[return-value]

    def on_store_changed(self, _: StoreChanged) -> None:
        """The store changed: screens that show what it holds read it again."""


class ListScreen(ConsoleScreen[None], Generic[T]):
    """One page of a list. Subclasses say what the list is (``TITLE``, Textual's own screen
    title, ``columns``,
    ``filter_hint``), how to read a page (``fetch``), how an item shows (``row``, ``key``)
    and what Enter does (``open_item``)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        # Named in the status line under the list, not in the footer: 80 columns are the
        # area keys' first.
        Binding("n", "next_page", "Next page", show=False),
        Binding("b", "previous_page", "Previous page", show=False),
        # Priority: read as the key arrives, so that what is typed right after it lands
        # in the filter (in the filter itself, "/" is typed as text).
        Binding("slash", "focus_filter", "Search", key_display="/", priority=True),
        Binding("r", "reload", "Reload", show=False),
        Binding("escape", "leave_filter", "Leave filter", show=False),
    ]

    columns: Sequence[str] = ()
    filter_hint: str = "filter"

    def __init__(self) -> None:
        super().__init__()
        self.items: list[T] = []
        self.filter_text = ""
        self._cursors: list[str | None] = [None]  # where each page seen so far began
        self._next: str | None = None
        self.loads = 0  # completed reads: tests wait on it
        self._read_again = True  # a failed read is made once more (see _load)

    def compose(self) -> ComposeResult:
        yield Static(self.title or "", classes="title")
        yield Input(placeholder=self.filter_hint, id="filter", select_on_focus=False)
        yield DataTable(cursor_type="row", zebra_stripes=True, id="rows")
        yield Static("", classes="status", id="status")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns(*self.columns)
        table.focus()

    def on_screen_resume(self) -> None:
        """Shown (the first time, or again from another area): read the page again, since
        the store may have changed while another screen was on top."""
        self.reload()

    # What subclasses provide.
    async def fetch(self, page: PageRequest) -> Page[T]:
        raise NotImplementedError

    def row(self, item: T) -> Sequence[Any]:
        raise NotImplementedError

    def key(self, item: T) -> str:
        raise NotImplementedError

    def open_item(self, item: T) -> None:
        """Enter on a row (nothing by default)."""

    def apply_filter(self, text: str) -> None:
        """The filter was submitted; raise ValueError (its message shown) if it cannot be read."""
        self.filter_text = text

    # Reading.
    def reload(self) -> None:
        # The coroutine function, not a coroutine: a read replaced before it began is never
        # made (a made one, cancelled unstarted, would warn "never awaited").
        self.run_worker(cast(Any, self._load), group="load", exclusive=True, exit_on_error=False)

    async def _load(self) -> None:
        after = self._cursors[-1]
        page = await self.console.attempt(
            lambda: self.fetch(PageRequest(limit=PAGE_SIZE, after=after)), doing="Reading"
        )
        if page is not None:
            self.items = list(page.items)
            self._next = page.next_after
            self._show()
            self._read_again = True
        elif self._read_again:
            # A read that failed (the store busy or away for a moment) is made once more a
            # second later, so the list fills itself; after that, the next change or visit.
            self._read_again = False
            self.set_timer(READ_AGAIN_SECONDS, self.reload)
        self.loads += 1

    def _show(self) -> None:
        table = self.query_one(DataTable)
        keep = table.cursor_row
        table.clear()
        for item in self.items:
            table.add_row(*self.row(item), key=self.key(item))
        if self.items:
            table.move_cursor(row=min(keep, len(self.items) - 1))
        number = len(self._cursors)
        more = ", n: next page" if self._next else ""
        back = ", b: previous" if number > 1 else ""
        empty = "nothing here" if not self.items else f"{len(self.items)} shown"
        self.query_one("#status", Static).update(f"page {number}: {empty}{more}{back}")

    def on_store_changed(self, _: StoreChanged) -> None:
        self.reload()

    def current(self) -> T | None:
        table = self.query_one(DataTable)
        if not self.items or table.cursor_row < 0 or table.cursor_row >= len(self.items):
            return None
        return self.items[table.cursor_row]

    # Keys.
    def action_next_page(self) -> None:
        if self._next is None:
            self.app.bell()
            return
        self._cursors.append(self._next)
        self.reload()

    def action_previous_page(self) -> None:
        if len(self._cursors) == 1:
            self.app.bell()
            return
        self._cursors.pop()
        self.reload()

    def action_reload(self) -> None:
        self.reload()

    def action_focus_filter(self) -> None:
        field = self.query_one("#filter", Input)
        if self.focused is field:
            field.insert_text_at_cursor("/")
        else:
            self.set_focus(field)  # at once, unlike focus(): the keys after "/" land in it
            field.select_all()  # and replace the filter there was (at once, unlike select-on-focus)

    def action_leave_filter(self) -> None:
        self.query_one(DataTable).focus()

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        try:
            self.apply_filter(event.value.strip())
        except ValueError as problem:
            self.notify(str(problem), title="Filter", severity="error")
            return
        self._cursors = [None]
        self.query_one(DataTable).focus()
        self.reload()

    @on(DataTable.RowSelected, "#rows")
    def _row_selected(self, _: DataTable.RowSelected) -> None:
        item = self.current()
        if item is not None:
            self.open_item(item)


class Confirm(ModalScreen[bool]):
    """Yes or no, before a change to money or access: `y` or Enter on Yes, `n` or Escape."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]
    DEFAULT_CSS = """
    Confirm { align: center middle; }
    Confirm > Vertical {
        width: 60; max-width: 100%; height: auto; border: thick $warning; padding: 1 2; background: $surface;
    }
    Confirm Horizontal { height: auto; }
    """

    def __init__(self, question: str):
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.question)
            with Horizontal():
                yield Button("Yes (y)", variant="warning", id="yes")
                yield Button("No (n)", id="no")

    AUTO_FOCUS = None  # see Form

    def on_mount(self) -> None:
        self.set_focus(self.query_one("#no", Button))

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class Form(FieldFocus, ModalScreen[dict[str, str] | None]):
    """A few labelled fields; Enter in the last (or Save) gives their values, Escape None.
    ``fields``: (name, label, initial value, password?)."""

    # Enter moves to the next field as the key is read (see SignInScreen), and saves in the last.
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("enter", "next_or_save", "Next/Save", show=False, priority=True),
        *FIELD_FOCUS_KEYS,
    ]
    DEFAULT_CSS = """
    Form { align: center middle; }
    Form > Vertical {
        width: 70; max-width: 100%; height: auto; max-height: 100%; border: thick $primary; padding: 0 1;
        background: $surface; overflow-y: auto;
    }
    Form Input { margin: 0 0 0 0; }
    Form Horizontal { height: auto; }
    """

    def __init__(self, title: str, fields: Sequence[tuple[str, str, str, bool]]):
        super().__init__()
        self.form_title = title
        self.fields = list(fields)

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.form_title, classes="title")
            for name, label, value, secret in self.fields:
                yield Label(label)
                # No select-on-focus: the focus event arrives after keys typed ahead, and
                # selecting then would let the rest of them replace what they had typed.
                yield Input(value=value, password=secret, id=f"field-{name}", select_on_focus=False)
            with Horizontal():
                yield Button("Save", variant="primary", id="save")
                yield Button("Cancel", id="cancel")

    def values(self) -> dict[str, str]:
        return {name: self.query_one(f"#field-{name}", Input).value for name, *_ in self.fields}

    # Focus set once, at mount, at once: Textual's auto-focus comes with the screen's resume
    # event, after keys typed ahead, and would take the focus back to the first field.
    AUTO_FOCUS = None

    def on_mount(self) -> None:
        enter_field(self, self.query(Input).first())

    def action_next_or_save(self) -> None:
        focused = self.focused
        if isinstance(focused, Button):
            focused.press()
            return
        inputs = list(self.query(Input))
        if isinstance(focused, Input) and inputs.index(focused) + 1 < len(inputs):
            enter_field(self, inputs[inputs.index(focused) + 1])  # at once: see SignInScreen
        elif isinstance(focused, Input):
            # A priority binding runs as the key arrives, ahead of the keys before it that
            # wait in the field's own queue: save from that queue, once they are in.
            focused.call_later(self._save)
        else:
            self._save()

    def _save(self) -> None:
        if self.is_current:
            self.dismiss(self.values())

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(self.values() if event.button.id == "save" else None)

    def action_cancel(self) -> None:
        self.dismiss(None)


async def confirmed(screen: Screen[Any], question: str) -> bool:
    """Ask, from a worker (push_screen_wait needs one)."""
    return bool(await screen.app.push_screen_wait(cast(Screen[Any], Confirm(question))))


async def filled(
    screen: Screen[Any], title: str, fields: Sequence[tuple[str, str, str, bool]]
) -> dict[str, str] | None:
    return cast(dict[str, str] | None, await screen.app.push_screen_wait(cast(Screen[Any], Form(title, fields))))


def action(screen: ConsoleScreen[Any], work: Callable[[], Awaitable[Any]]) -> None:
    """Run an action of the screen (which may ask questions) in a worker of its own."""
    screen.run_worker(work(), group="action", exclusive=True, exit_on_error=False)

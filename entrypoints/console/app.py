"""The console's application: sign-in first, then one screen per area, each reachable by one
key from anywhere (the footer shows them, `?` shows every binding of the current screen).

Each area is a Textual mode with its own stack of screens: `q` goes back within it, and
quits from its first screen. Work on the store runs in workers (never on the interface's
turn), and every failure of it is a message in the console, never a traceback: a domain
refusal is shown as the API would word it, anything else as one line pointing at the log.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar, TypeVar

from textual.app import App
from textual.binding import Binding, BindingType
from textual.screen import Screen

from core.domain.errors import DomainError, Unavailable, ValidationFailed
from core.domain.users import Actor, Role
from entrypoints.console.context import ConsoleServices
from entrypoints.console.screens import AREAS
from entrypoints.console.screens.common import StoreChanged
from entrypoints.console.screens.signin import SignInScreen

log = logging.getLogger("tillbox.console")
T = TypeVar("T")

#: How often the console looks at the store's change counter: lists follow the store no
#: faster than this (a few times a second), without anyone pressing a key.
WATCH_SECONDS = 0.3


def describe(error: BaseException) -> str:
    """One line for staff: what the API would say, or where to look."""
    if isinstance(error, ValidationFailed):
        fields = error.details.get("fields", {})
        if fields:
            return "; ".join(f"{name}: {problem}" for name, problem in fields.items())
    if isinstance(error, DomainError):
        return error.message
    return f"Something went wrong ({type(error).__name__}); the details are in console.log."


class AdminConsole(App[None]):
    TITLE = "Tillbox admin"
    ENABLE_COMMAND_PALETTE = False
    CSS = """
    Screen { layout: vertical; }
    .title { height: 1; background: $primary; color: $text; padding: 0 1; text-style: bold; }
    .status { height: 1; padding: 0 1; color: $text-muted; }
    .problem { color: $error; }
    DataTable { height: 1fr; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        *(Binding(area.key, f"open('{area.name}')", area.label) for area in AREAS),
        Binding("q", "back", "Back"),
        Binding("question_mark", "toggle_help", "Help", key_display="?"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
    ]
    MODES: ClassVar[dict[str, str | Callable[[], Screen[Any]]]] = {
        "signin": SignInScreen,
        **{area.name: area.screen for area in AREAS},
    }
    DEFAULT_MODE = "signin"

    def __init__(self, open_services: Callable[[], AbstractAsyncContextManager[ConsoleServices]]):
        super().__init__()
        self._open_services = open_services
        self._held = contextlib.AsyncExitStack()
        self.services: ConsoleServices | None = None
        self.store_problem: str | None = None  # why the store could not be opened
        self.actor: Actor | None = None
        self._refresh_token: str | None = None
        self._seen_counter: int | None = None

    # The store.
    async def on_mount(self) -> None:
        # Once the sign-in screen is drawn: opening the store first imports the store's
        # modules, a good part of the start-up, and the worker would run that before the
        # first frame.
        self.call_after_refresh(self._start_opening_store)
        self.set_interval(WATCH_SECONDS, self._watch_store)

    def _start_opening_store(self) -> None:
        self.run_worker(self.open_store(), group="store", exclusive=True, exit_on_error=False)

    async def open_store(self) -> None:
        """Open the store (again, after a failure): the sign-in screen says how it went."""
        self.store_problem = None
        try:
            self.services = await self._held.enter_async_context(self._open_services())
        except Exception as error:
            log.warning("console could not open the store", exc_info=True)
            self.store_problem = describe(error) if isinstance(error, DomainError) else _one_line(error)
        self.screen.post_message(StoreChanged())

    async def on_unmount(self) -> None:
        # The last thing the app does on its loop, however it ends (q, ctrl+c, a test's end):
        # left to asyncio.run's clean-up, the store would be closed outside its loop.
        await self.close_store()

    async def close_store(self) -> None:
        """End the session and close the store: when the console ends, however it ends."""
        if self.services is not None and self._refresh_token is not None:
            from core.services.auth import LogOut

            with contextlib.suppress(Exception):
                await self.services.auth.logout(LogOut(refresh_token=self._refresh_token))
            self._refresh_token = None
        await self._held.aclose()
        self.services = None

    def _watch_store(self) -> None:
        if self.services is None or self.actor is None:
            return
        try:
            counter = self.services.store.change_counter()
        except Unavailable:
            return  # the screens' next read says so
        if counter != self._seen_counter:
            self._seen_counter = counter
            self.screen.post_message(StoreChanged())

    # Who is signed in.
    def signed_in(self, actor: Actor, email: str, refresh_token: str) -> None:
        self.actor = actor
        self._refresh_token = refresh_token
        self.sub_title = f"{email} ({actor.role.value}) on {self.store_label()}"
        self.switch_mode("dashboard")

    def store_label(self) -> str:
        if self.services is None:
            return "no store"
        settings = self.services.settings
        if settings["database"]["url"]:
            from adapters.postgres import maintenance

            return maintenance.describe(settings["database"]["url"])
        return str(self.services.data_dir)

    # Keys that work everywhere.
    def action_open(self, name: str) -> None:
        if self.actor is None:
            self.bell()
            return
        area = next(a for a in AREAS if a.name == name)
        if area.admins_only and self.actor.role is not Role.ADMIN:
            self.notify(f"Only admins can open {area.label}.", severity="error")
            return
        self.switch_mode(name)

    async def action_back(self) -> None:
        if len(self.screen_stack) > 1:
            self.pop_screen()
        else:
            self.exit()

    def action_toggle_help(self) -> None:
        from textual.widgets import HelpPanel

        if self.screen.query(HelpPanel):
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()

    # Work on the store, for every screen.
    async def attempt(self, work: Callable[[], Awaitable[T]], *, doing: str) -> T | None:
        """Run ``work``; on failure tell staff in one line (and log it) and give None."""
        try:
            return await work()
        except DomainError as error:
            self.notify(describe(error), title=f"{doing}: refused", severity="error", timeout=8)
        except Exception as error:
            log.exception("console action failed", extra={"fields": {"doing": doing}})
            self.notify(describe(error), title=f"{doing}: failed", severity="error", timeout=8)
        return None

    def require_services(self) -> ConsoleServices:
        if self.services is None:
            raise Unavailable("The store is not open.", code="database_unavailable")
        return self.services

    def require_actor(self) -> Actor:
        if self.actor is None:
            raise Unavailable("Nobody is signed in.", code="signed_out")
        return self.actor


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__

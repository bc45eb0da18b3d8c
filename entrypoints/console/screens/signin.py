"""Sign-in: a staff or admin email and password, through the API's own login (same throttle,
same audit entries, source `console`); a customer's account is refused. The store opens
while this screen shows: what went wrong opening it is said here, and `ctrl+r` tries again."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Button, Footer, Input, Label, Static

from core.services.auth import LogIn
from entrypoints.console.context import CONSOLE_SOURCE
from entrypoints.console.screens.common import FIELD_FOCUS_KEYS, ConsoleScreen, FieldFocus, StoreChanged


class SignInScreen(FieldFocus, ConsoleScreen[None]):
    # Enter and Tab move on as the key is read, not when the Input's message is handled:
    # keys typed ahead (a paste, a script in tmux) land in the next field, not this one.
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+r", "reopen", "Open the store again"),
        Binding("enter", "next_or_sign_in", "Sign in", show=False, priority=True),
        *FIELD_FOCUS_KEYS,
    ]
    DEFAULT_CSS = """
    SignInScreen { align: center middle; }
    SignInScreen > Vertical { width: 60; max-width: 100%; height: auto; border: round $primary; padding: 0 1; }
    SignInScreen #message { height: auto; margin: 1 0 0 0; }
    """

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Tillbox admin: sign in", classes="title")
            yield Label("Email")
            yield Input(placeholder="staff@example.com", id="email", select_on_focus=False)  # see Form
            yield Label("Password")
            yield Input(password=True, id="password", select_on_focus=False)
            yield Button("Sign in", variant="primary", id="sign-in")
            yield Static("Opening the store...", id="message")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#email", Input).focus()
        self._show_store()

    _waiting_to_sign_in = False

    def on_store_changed(self, _: StoreChanged) -> None:
        self._show_store()
        if self._waiting_to_sign_in and self.console.services is not None:
            self._waiting_to_sign_in = False
            self._sign_in()

    def _show_store(self) -> None:
        self.refresh_bindings()
        console = self.console
        message = self.query_one("#message", Static)
        if console.store_problem is not None:
            message.update(f"The store cannot be opened: {console.store_problem}\n(ctrl+r: try again, ctrl+c: quit)")
            message.add_class("problem")
        elif console.services is None:
            message.update("Opening the store...")
            message.remove_class("problem")
        else:
            message.update(f"Store: {console.store_label()}")
            message.remove_class("problem")

    def action_reopen(self) -> None:
        if self.console.services is None:
            self.query_one("#message", Static).update("Opening the store...")
            self.run_worker(self.console.open_store(), group="store", exclusive=True, exit_on_error=False)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "reopen":
            return self.console.services is None  # shown only while the store is not open
        return True

    def action_next_or_sign_in(self) -> None:
        if self.focused is self.query_one("#email", Input):
            # set_focus, not focus(): the latter moves it later, after keys already read.
            self.set_focus(self.query_one("#password", Input))
        elif isinstance(self.focused, Input):
            # After the keys typed before Enter, which wait in the field's queue (see Form).
            self.focused.call_later(self._sign_in)
        else:
            self._sign_in()

    @on(Button.Pressed, "#sign-in")
    def _sign_in(self) -> None:
        self.run_worker(self._attempt(), group="sign-in", exclusive=True, exit_on_error=False)

    async def _attempt(self) -> None:
        console = self.console
        message = self.query_one("#message", Static)
        email = self.query_one("#email", Input).value.strip()
        password = self.query_one("#password", Input).value
        if not email or not password:
            message.update("Type your email and password.")
            message.add_class("problem")
            return
        if console.services is None:
            # Still opening (or failed): signed in as soon as it is open, not dropped unsaid.
            self._waiting_to_sign_in = console.store_problem is None
            self._show_store()
            if self._waiting_to_sign_in:
                message.update("Opening the store... you are signed in as soon as it is open.")
            return
        services = console.services
        message.update("Signing in...")
        message.remove_class("problem")

        async def sign_in() -> tuple[object, str]:
            pair = await services.auth.login(LogIn(email, password, source_ip=CONSOLE_SOURCE, staff_only=True))
            actor = await services.auth.authenticate(pair.access_token, CONSOLE_SOURCE)
            return actor, pair.refresh_token

        try:
            actor, refresh_token = await sign_in()
        except Exception as error:
            from entrypoints.console.app import describe

            self.query_one("#password", Input).value = ""
            message.update(describe(error))
            message.add_class("problem")
            return
        console.signed_in(actor, email, refresh_token)  # type: ignore[arg-type]

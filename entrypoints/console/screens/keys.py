"""`k`, keys and settings (admins): rotate the key that signs access tokens, the signed-in
admin's personal API keys (create one, its secret shown once in a dialog; revoke one), back
the store up to a file, and read the effective configuration (secrets masked, as `tillbox
config show` prints it). A backup is a copy of the whole store (or pg_dump): it runs in a
thread, so the console goes on answering meanwhile."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, cast

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Label, Static

from adapters.sqlite.maintenance import BackupError
from core.domain.api_keys import ApiKey
from core.domain.pagination import MAX_LIMIT, PageRequest
from core.domain.scopes import format_scopes
from core.services.api_keys import CreateApiKey, ListApiKeys, RevokeApiKey
from entrypoints.backups import back_up
from entrypoints.console.screens.common import ConsoleScreen, StoreChanged, action, confirmed, filled
from entrypoints.settings import describe_settings

#: What a new key's form offers: reads only, for the common script, and three months.
DEFAULT_KEY_SCOPES = "catalog:read orders:read"
DEFAULT_KEY_DAYS = "90"


class SecretShown(ModalScreen[None]):
    """A new API key's secret, shown this once; Enter or Escape closes it for good."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,enter", "close", "Done")]
    DEFAULT_CSS = """
    SecretShown { align: center middle; }
    SecretShown > Vertical {
        width: 76; max-width: 100%; height: auto; border: thick $warning; padding: 1 2; background: $surface;
    }
    SecretShown #secret { margin: 1 0; }
    """

    def __init__(self, key: ApiKey, secret: str):
        super().__init__()
        self.key = key
        self._secret = secret

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"API key {self.key.id} ({self.key.name})")
            yield Static(self._secret, id="secret", markup=False)
            yield Label("This secret will not be shown again: copy it now. Scripts send it as")
            yield Label("Authorization: Bearer <secret>.")
            yield Button("Done (Enter)", variant="primary", id="done")

    def action_close(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed)
    def _pressed(self, _: Button.Pressed) -> None:
        self.dismiss(None)


class KeysScreen(ConsoleScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "rotate", "Rotate key"),
        Binding("plus", "create_api_key", "New API key"),
        Binding("x", "revoke_api_key", "Revoke API key"),
        Binding("b", "backup", "Backup"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.last_result = ""  # what the last action did (or why not): tests read it
        self.backing_up = False
        self.api_keys: list[ApiKey] = []  # the signed-in admin's, newest first
        self.key_loads = 0  # completed reads of them: tests wait on it

    def compose(self) -> ComposeResult:
        yield Static("Keys and settings", classes="title")
        yield Static("r: new signing key (old tokens keep working until they expire)  b: back up", id="result")
        yield Static("Your API keys (n: new, x: revoke the selected one)", id="api-keys-title")
        yield DataTable(cursor_type="row", zebra_stripes=True, id="api-keys")
        with VerticalScroll(id="settings-scroll"):
            yield Static("", id="settings", markup=False)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        services = self.console.services
        if services is not None:
            self.query_one("#settings", Static).update("\n".join(describe_settings(services.settings)))
        table = self.query_one("#api-keys", DataTable)
        table.add_columns("id", "name", "state", "expires", "last used", "scopes")
        table.styles.height = 6  # a few keys, and the settings below them, in 24 lines
        table.focus()
        self.reload_keys()

    def on_store_changed(self, _: StoreChanged) -> None:
        self.reload_keys()

    def said(self, text: str) -> None:
        self.last_result = text
        self.query_one("#result", Static).update(text)

    # Rotating the signing key.
    def action_rotate(self) -> None:
        action(self, self._rotate)

    async def _rotate(self) -> None:
        console = self.console
        ttl = console.require_services().settings["auth"]["access_token_ttl"]
        question = f"Make a new signing key? Tokens signed with the old one keep working for up to {ttl} s."
        if not await confirmed(self, question):
            return
        kid = await console.attempt(
            lambda: console.require_services().auth.rotate_signing_key(console.require_actor()),
            doing="Rotating the signing key",
        )
        if kid is not None:
            self.said(f"new signing key {kid}")
            self.notify(f"New signing key {kid}.", title="Keys")

    # Personal API keys.
    def reload_keys(self) -> None:
        self.run_worker(cast(Any, self._load_keys), group="api-keys", exclusive=True, exit_on_error=False)

    async def _load_keys(self) -> None:
        console = self.console
        page = await console.attempt(
            lambda: console.require_services().api_keys.list(
                ListApiKeys(actor=console.require_actor(), page=PageRequest(limit=MAX_LIMIT))
            ),
            doing="Reading the API keys",
        )
        if page is not None:
            self.api_keys = list(page.items)
            self._show_keys()
        self.key_loads += 1

    def _show_keys(self) -> None:
        table = self.query_one("#api-keys", DataTable)
        keep = table.cursor_row
        table.clear()
        now = datetime.now(UTC)
        for key in self.api_keys:
            state = "revoked" if key.revoked_at is not None else "expired" if key.expires_at <= now else "active"
            used = key.last_used_at.strftime("%Y-%m-%d %H:%M") if key.last_used_at else "never"
            table.add_row(
                key.id, key.name, state, key.expires_at.strftime("%Y-%m-%d"), used, format_scopes(key.scopes),
                key=key.id,
            )  # fmt: skip
        if self.api_keys:
            table.move_cursor(row=min(max(keep, 0), len(self.api_keys) - 1))

    def selected_key(self) -> ApiKey | None:
        row = self.query_one("#api-keys", DataTable).cursor_row
        return self.api_keys[row] if self.api_keys and 0 <= row < len(self.api_keys) else None

    def action_create_api_key(self) -> None:
        action(self, self._create_api_key)

    async def _create_api_key(self) -> None:
        console = self.console
        values = await filled(
            self,
            "New personal API key",
            [
                ("name", "What it is for (1-100 characters)", "", False),
                ("scopes", "Scopes, space-separated", DEFAULT_KEY_SCOPES, False),
                ("days", "Days until it expires (1-365)", DEFAULT_KEY_DAYS, False),
            ],
        )
        if values is None:
            return
        try:
            days = int(values["days"].strip())
        except ValueError:
            self.said("new API key: the days must be a whole number")
            return
        name, scopes = values["name"].strip(), values["scopes"].strip()
        question = f"Create the API key {name!r} with {scopes or 'no scopes'}, for {days} days?"
        if not await confirmed(self, question):
            return
        new = await console.attempt(
            lambda: console.require_services().api_keys.create(
                CreateApiKey(actor=console.require_actor(), name=name, scopes=scopes, expires_in=timedelta(days=days))
            ),
            doing="Creating the API key",
        )
        if new is None:
            return
        self.said(f"created API key {new.key.id}; its secret was shown once")
        self.reload_keys()
        await self.app.push_screen_wait(cast(Screen[Any], SecretShown(new.key, new.secret)))

    def action_revoke_api_key(self) -> None:
        action(self, self._revoke_api_key)

    async def _revoke_api_key(self) -> None:
        console = self.console
        key = self.selected_key()
        if key is None:
            self.said("no API key to revoke")
            return
        if key.revoked_at is not None:
            self.said(f"API key {key.id} is revoked already")
            return
        if not await confirmed(self, f"Revoke the API key {key.id} ({key.name})? Scripts using it are refused."):
            return
        revoked = await console.attempt(
            lambda: console.require_services().api_keys.revoke(
                RevokeApiKey(actor=console.require_actor(), key_id=key.id)
            ),
            doing="Revoking the API key",
        )
        if revoked is not None:
            self.said(f"revoked API key {revoked.id}")
            self.reload_keys()

    # Backing up.
    def action_backup(self) -> None:
        if self.backing_up:
            self.notify("A backup is already being written.", severity="warning")
            return
        action(self, self._backup)

    async def _backup(self) -> None:
        console = self.console
        services = console.require_services()
        kind = "dump" if services.settings["database"]["url"] else "db"
        suggested = Path.cwd() / f"tillbox-{datetime.now(UTC):%Y%m%d-%H%M%S}.{kind}"
        values = await filled(self, "Back up the store", [("path", "To the file (a new one)", str(suggested), False)])
        if values is None:
            return
        text = values["path"].strip()
        if not text:
            self.said("backup: no path given")
            return
        target = Path(text)

        async def write() -> str | None:
            try:
                return await asyncio.to_thread(lambda: back_up(services.settings, target.expanduser()))
            except BackupError as refusal:
                self.said(f"backup refused: {refusal}")
                self.notify(str(refusal), title="Backup: refused", severity="error", timeout=8)
                return None

        self.backing_up = True
        self.said(f"writing the backup to {target}...")
        try:
            done = await console.attempt(write, doing="Backing up")
        finally:
            self.backing_up = False
        if done is not None:
            self.said(done)
            self.notify(done, title="Backup")
        elif self.last_result.startswith("writing"):
            self.said("backup failed (the message says why)")

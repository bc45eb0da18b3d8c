"""`k`, keys and settings (admins): rotate the key that signs access tokens, back the store up
to a file, and read the effective configuration (secrets masked, as `tillbox config show`
prints it). A backup is a copy of the whole store (or pg_dump): it runs in a thread, so the
console goes on answering meanwhile."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Footer, Static

from adapters.sqlite.maintenance import BackupError
from entrypoints.backups import back_up
from entrypoints.console.screens.common import ConsoleScreen, action, confirmed, filled
from entrypoints.settings import describe_settings


class KeysScreen(ConsoleScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "rotate", "Rotate key"),
        Binding("b", "backup", "Backup"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.last_result = ""  # what the last action did (or why not): tests read it
        self.backing_up = False

    def compose(self) -> ComposeResult:
        yield Static("Keys and settings", classes="title")
        yield Static("r: new signing key (old tokens keep working until they expire)  b: back up", id="result")
        with VerticalScroll(id="settings-scroll"):
            yield Static("", id="settings", markup=False)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        services = self.console.services
        if services is not None:
            self.query_one("#settings", Static).update("\n".join(describe_settings(services.settings)))
        self.query_one(VerticalScroll).focus()

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

"""`d`, the dashboard: how the shop is doing, and whether the console's store is healthy."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Footer, Static

from core.domain.errors import Unavailable
from entrypoints.console.screens.common import ConsoleScreen, StoreChanged


class DashboardScreen(ConsoleScreen[None]):
    def compose(self) -> ComposeResult:
        yield Static("Dashboard", classes="title")
        yield Static("", id="health")
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_figures()

    def on_store_changed(self, _: StoreChanged) -> None:
        self.refresh_figures()

    def refresh_figures(self) -> None:
        self.query_one("#health", Static).update(self.health())

    def health(self) -> str:
        from entrypoints.container import disk_check

        services = self.console.services
        if services is None:
            return "Store: not open"
        try:
            ready = services.store.check_ready()
            store = f"ok (schema version {ready.get('schema_version', '?')})"
        except Unavailable as problem:
            store = f"UNAVAILABLE: {problem.message}"
        try:
            disk = disk_check(services.data_dir)["disk"]
        except (OSError, RuntimeError) as problem:
            disk = f"LOW: {problem}"
        return f"Health\n  store: {store}\n  disk:  {disk}"

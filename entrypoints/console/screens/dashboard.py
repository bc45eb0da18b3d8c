"""`d`, the dashboard: how the shop is doing, and whether the console's store is healthy.

The figures follow the store (StoreChanged), but are read at most once a second: a busy
shop commits many times a second, and each read of them is a few index ranges of the whole
store (core/services/reports.py), cheap but not free."""

from __future__ import annotations

import time

from textual.app import ComposeResult
from textual.timer import Timer
from textual.widgets import Footer, Static

from core.domain.errors import Unavailable
from core.services.reports import ReadShopFigures, ShopFigures
from entrypoints.console.money import show
from entrypoints.console.screens.common import ConsoleScreen, StoreChanged

#: The figures are read again at most this often, however often the store changes.
REFRESH_SECONDS = 1.0


def describe_figures(figures: ShopFigures) -> str:
    currency = figures.currency

    def summary(label: str, orders: int, total: int) -> str:
        return f"  {label:<12}{orders:>7} orders  {show(total, currency):>18}"

    low = figures.low_stock
    named = ", ".join(f"{p.name[:24]} ({p.stock})" for p in low)
    more = ", ..." if figures.more_low_stock else ""
    lines = [
        f"Orders placed (not cancelled or expired), {currency}",
        summary("today (UTC)", figures.today.orders, figures.today.total),
        summary("last 7 days", figures.last_7_days.orders, figures.last_7_days.total),
        f"  waiting for payment: {figures.awaiting_payment:>5}   paid, to fulfil: {figures.awaiting_fulfilment:>5}",
        f"  refunds pending at the provider: {figures.pending_refunds}",
        f"Low stock (at most {figures.low_stock_threshold}): {named + more if low else 'none'}",
    ]
    return "\n".join(lines)


class DashboardScreen(ConsoleScreen[None]):
    def __init__(self) -> None:
        super().__init__()
        self.figures: ShopFigures | None = None
        self.reads = 0  # completed reads of the figures: tests wait on it
        self._last_read = float("-inf")  # time.monotonic() of the last read's start
        self._later: Timer | None = None  # a read put off by the once-a-second rule
        self._reading = False
        self._again = False  # the store changed during a read: read again after it

    def compose(self) -> ComposeResult:
        yield Static("Dashboard", classes="title")
        yield Static("Reading the figures...", id="figures")
        yield Static("", id="health")
        yield Static("", classes="status", id="status")
        yield Footer(compact=True)

    def on_screen_resume(self) -> None:
        # Each time the dashboard is shown (the first time too): another area, or another
        # instance, may have changed the store while it was not on screen.
        self.refresh_figures()

    def on_store_changed(self, _: StoreChanged) -> None:
        self.refresh_figures()

    def refresh_figures(self) -> None:
        """Read the figures now, or once a second has passed since the last read (once, however
        many changes came meanwhile)."""
        self.query_one("#health", Static).update(self.health())
        if self._reading:
            self._again = True  # never two reads at once, nor one cut short by the next
            return
        wait = self._last_read + REFRESH_SECONDS - time.monotonic()
        if wait > 0:
            if self._later is None:
                self._later = self.set_timer(wait, self._read_later)
            return
        self._last_read = time.monotonic()
        self._reading = True
        self.run_worker(self._read(), group="figures", exit_on_error=False)

    def _read_later(self) -> None:
        self._later = None
        self.refresh_figures()

    async def _read(self) -> None:
        console = self.console
        try:
            figures = await console.attempt(
                lambda: console.require_services().reports.shop_figures(ReadShopFigures(actor=console.require_actor())),
                doing="Reading the figures",
            )
            if figures is not None:
                self.figures = figures
                self.query_one("#figures", Static).update(describe_figures(figures))
                self.query_one("#status", Static).update(f"as of {figures.at:%H:%M:%S} UTC; follows the store")
        finally:
            self._reading = False
            self.reads += 1
        if self._again:
            self._again = False
            self.refresh_figures()

    def health(self) -> str:
        from entrypoints.container import disk_check

        services = self.console.services
        if services is None:
            return "Health\n  store: not open"
        try:
            ready = services.store.check_ready()
            store = f"ok (schema version {ready.get('schema_version', '?')})"
        except Unavailable as problem:
            store = f"UNAVAILABLE: {problem.message}"
        try:
            disk = disk_check(services.data_dir)["disk"]
        except (OSError, RuntimeError) as problem:
            disk = f"LOW: {problem}"
        return f"Health\n  store:    {store}\n  payments: {self.payments_health()}\n  disk:     {disk}"

    def payments_health(self) -> str:
        services = self.console.require_services()
        if not services.gateway.available:
            return "no Stripe key configured: card payments are refused"
        # The breaker is this console's own (each process has one): it opens when the
        # console's calls to Stripe fail, which says little about the server's.
        breaker = getattr(services.gateway, "breaker", None)
        state = "" if breaker is None else f", breaker {breaker.state.value} in this console"
        return f"Stripe key configured{state}"

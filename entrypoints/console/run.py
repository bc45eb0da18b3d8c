"""Starting the console: the store is opened by a worker while the sign-in screen shows, and
closed when the console ends, whichever way it ends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from entrypoints.console.context import ConsoleServices
from entrypoints.datadir import serving
from entrypoints.settings import Settings, uses_postgres

if TYPE_CHECKING:
    from entrypoints.console.app import AdminConsole

LOG_FILE = "console.log"


class StoreMissing(Exception):
    """The configuration names a store that was never created."""


@contextlib.asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[ConsoleServices]:
    """The services on the store the settings name (raises what the store raises: a newer
    schema, an unreachable server, each with a one-line message).

    Runs in a worker once the sign-in screen is up, so the store's modules (the container
    and the adapters, a good part of the start-up) are imported here, not before."""
    from entrypoints.container import DATABASE_FILE, build_container, provide, start, stop

    if not uses_postgres(settings) and not (settings.data_dir / DATABASE_FILE).exists():
        # The console never creates a store: an empty one opened by mistake (a wrong
        # --config, a typo in data.dir) would look like a shop with nothing in it.
        raise StoreMissing(
            f"There is no store in {settings.data_dir}: start `tillbox serve` or run `tillbox db migrate` first,"
            " or point --config at the shop's configuration."
        )
    container = build_container(settings)
    await start(container)
    try:
        yield ConsoleServices(
            auth=await provide(container.auth_service),
            catalog=await provide(container.catalog_service),
            orders=await provide(container.order_service),
            payments=await provide(container.payment_service),
            audit=await provide(container.audit_service),
            api_keys=await provide(container.api_key_service),
            reports=await provide(container.report_service),
            clients=await provide(container.client_service),
            gateway=await provide(container.payment_gateway),
            store=await provide(container.database),
            settings=settings,
            data_dir=settings.data_dir,
        )
    finally:
        await stop(container)


def _log_to(data_dir: Path | None, level: str) -> None:
    """The terminal is the console's: log lines go to a file in the data directory (nowhere
    when there is none yet: the console then only says that there is no store)."""
    from entrypoints.logs import JsonFormatter

    handler: logging.Handler = logging.NullHandler()
    if data_dir is not None:
        handler = logging.FileHandler(data_dir / LOG_FILE, encoding="utf-8")
        handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


async def _run(app: AdminConsole) -> None:
    try:
        await app.run_async()
    finally:
        await app.close_store()  # in this loop, before it ends: the session, then the store


def run_console(settings: Settings) -> None:
    data_dir = settings.data_dir
    if uses_postgres(settings):
        data_dir.mkdir(parents=True, exist_ok=True)  # as `serve` makes it: the host's caches live there
    from entrypoints.console.app import AdminConsole

    app = AdminConsole(lambda: open_services(settings))
    with contextlib.ExitStack() as held:
        if data_dir.is_dir():
            # Held like a server holds it: `restore` and `db reset` wait until the console is closed.
            held.enter_context(serving(data_dir))
            _log_to(data_dir, settings["log"]["level"])
        else:
            _log_to(None, settings["log"]["level"])
        asyncio.run(_run(app))
    if app.return_code:
        raise SystemExit(app.return_code)

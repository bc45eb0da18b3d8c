"""Running the HTTP server process: event loop, listening socket, signals, graceful stop."""

from __future__ import annotations

import logging

from aiohttp import web

from entrypoints.container import build_container
from entrypoints.http.app import create_app
from entrypoints.logs import AccessLog
from entrypoints.settings import Settings

log = logging.getLogger("tillbox.server")


class ServerError(Exception):
    """The server could not start (port in use, address not available)."""


def event_loop_factory() -> object:
    """uvloop where it is installed (about 15% more requests per second here)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is in the lock file on Linux
        return None
    return uvloop.new_event_loop


def serve(settings: Settings) -> None:
    server = settings["server"]
    container = build_container(settings)
    app = create_app(container, access_log=AccessLog() if server["access_log"] else None)
    host, port = server["host"], server["port"]

    def announce(_: str) -> None:
        log.info(
            "listening",
            extra={"fields": {"url": f"http://{host}:{port}", "data_dir": str(settings.data_dir)}},
        )

    factory = event_loop_factory()
    loop = factory() if callable(factory) else None
    try:
        # run_app stops accepting on SIGTERM/SIGINT, gives in-flight requests
        # shutdown_timeout seconds, then runs cleanup (closing the database) and returns.
        web.run_app(
            app,
            host=host,
            port=port,
            shutdown_timeout=server["shutdown_grace"],
            access_log=None,
            print=announce,
            loop=loop,
            handle_signals=True,
        )
    except OSError as e:
        raise ServerError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    log.info("stopped")

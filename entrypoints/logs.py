"""JSON logs, one object per line on standard error (access log on standard output).

No passwords, tokens or card data are ever passed to a logger; the access log
records the path without its query string for the same reason.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from typing import Any

import orjson

from adapters.timestamps import format_timestamp


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        from datetime import UTC, datetime

        entry: dict[str, Any] = {
            "time": format_timestamp(datetime.fromtimestamp(record.created, UTC)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            entry.update(extra)
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp logs every failed handshake at error level; its access logger is ours.
    logging.getLogger("aiohttp.access").propagate = False


class AccessLog:
    """A cheap access log: one JSON line per request, written to a buffered stream that
    is flushed by the event loop about once a second (not per request)."""

    def __init__(self, stream: Any = None) -> None:
        self._stream = stream if stream is not None else sys.stdout.buffer
        self._last_flush = time.monotonic()

    def write(self, entry: dict[str, Any]) -> None:
        self._stream.write(orjson.dumps(entry) + b"\n")
        now = time.monotonic()
        if now - self._last_flush > 1.0:
            self._last_flush = now
            self.flush()

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()

"""JSON logs, one object per line on standard error (access log on standard output).

No passwords, tokens or card data are ever passed to a logger; the access log
records the path without its query string for the same reason.
"""

from __future__ import annotations

import asyncio
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
    """One JSON line per request, written in batches: a request only appends a tuple, and
    the event loop formats and writes what has gathered ten times a second (and at
    shutdown). Formatting and writing each line as it happened cost ~15% of a small
    request's CPU; flushing less often than this holds the loop long enough to show in p99."""

    FLUSH_SECONDS = 0.1

    def __init__(self, stream: Any = None) -> None:
        self._stream = stream if stream is not None else sys.stdout.buffer
        self._pending: list[tuple[float, str, str | None, str, str, int, float]] = []
        self._scheduled = False
        self._second = -1
        self._second_text = ""

    def write(
        self, at: float, request_id: str, remote: str | None, method: str, path: str, status: int, ms: float
    ) -> None:
        self._pending.append((at, request_id, remote, method, path, status, ms))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_later(self.FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        if not pending:
            return
        lines = []
        for at, request_id, remote, method, path, status, ms in pending:
            entry = {
                "time": self._format(at),
                "request_id": request_id,
                "remote": remote,
                "method": method,
                "path": path,
                "status": status,
                "ms": round(ms, 3),
            }
            lines.append(orjson.dumps(entry))
        with contextlib.suppress(OSError, ValueError):
            self._stream.write(b"\n".join(lines) + b"\n")
            self._stream.flush()

    def _format(self, at: float) -> str:
        second = int(at)
        if second != self._second:  # one strftime per second, not per line
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{int((at - second) * 1_000_000):06d}Z"

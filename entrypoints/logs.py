"""JSON logs, one object per line on standard error (access log on standard output).

No passwords, tokens or card data reach either: the one handler that writes the log
redacts every record first, whichever logger made it (ours, aiohttp's, stripe's, asyncio's;
see ``entrypoints.redaction``), and the access log records the path without its query
string, redacted too, since a client can put anything in a path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sys
import threading
import time
from types import TracebackType
from typing import IO, Any

import orjson

from adapters.timestamps import format_timestamp
from entrypoints.redaction import RedactingFilter, redact


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
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["traceback"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str = "info", stream: IO[str] | None = None) -> logging.Handler:
    """Every log record, from every logger, goes to one handler: redacted, then as JSON to
    ``stream`` (standard error by default). Exceptions nothing caught, in the main thread
    or another, are logged through it too, rather than printed raw by Python."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp logs every failed handshake at error level; its access logger is ours.
    logging.getLogger("aiohttp.access").propagate = False
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
    return handler


_uncaught = logging.getLogger("tillbox")


def _log_uncaught(kind: type[BaseException], error: BaseException, trace: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, trace)
        return
    _uncaught.critical("uncaught exception", exc_info=(kind, error, trace))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:  # nothing to say, as the default hook
        return
    _uncaught.error(
        "uncaught exception in a thread",
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        extra={"fields": {"thread": args.thread.name if args.thread is not None else None}},
    )


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# As entrypoints.http.middlewares makes them: 22 hex digits, too long for a card number.
_OWN_REQUEST_ID = re.compile(r"[0-9a-f]{22}")


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
        self._paths: dict[str, str] = {}  # path -> redacted: most requests ask for a path asked before

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
                # What a client sent may hold a secret (a token pasted into a path or used
                # as a request id); the server's own request ids and methods cannot.
                "request_id": request_id if _OWN_REQUEST_ID.fullmatch(request_id) else redact(request_id),
                "remote": remote,
                "method": method if method in _METHODS else redact(method),
                "path": self._redacted_path(path),
                "status": status,
                "ms": round(ms, 3),
            }
            lines.append(orjson.dumps(entry))
        with contextlib.suppress(OSError, ValueError):
            self._stream.write(b"\n".join(lines) + b"\n")
            self._stream.flush()

    def _redacted_path(self, path: str) -> str:
        redacted = self._paths.get(path)
        if redacted is None:
            if len(self._paths) >= 4096:
                self._paths.clear()
            redacted = self._paths[path] = redact(path)
        return redacted

    def _format(self, at: float) -> str:
        second = int(at)
        if second != self._second:  # one strftime per second, not per line
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{int((at - second) * 1_000_000):06d}Z"

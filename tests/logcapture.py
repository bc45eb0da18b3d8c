"""The server's own log configuration, writing to a buffer a test can read."""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import threading
from collections.abc import Iterator

import attrs

from entrypoints.logs import JsonFormatter, configure_logging


@attrs.define
class CapturedLog:
    redacted: io.StringIO  # what the server's handler wrote
    raw: io.StringIO  # the same records formatted before redaction: what would have leaked

    def text(self) -> str:
        return self.redacted.getvalue()


@contextlib.contextmanager
def captured_log(level: str = "debug") -> Iterator[CapturedLog]:
    """``configure_logging(level)`` as ``tillbox serve`` calls it, into a buffer, with an
    unredacting handler in front of it; everything is put back as it was on the way out."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, sys.excepthook, threading.excepthook)
    access = logging.getLogger("aiohttp.access")
    saved_propagate = access.propagate
    log = CapturedLog(io.StringIO(), io.StringIO())
    try:
        handler = configure_logging(level, stream=log.redacted)
        raw = logging.StreamHandler(log.raw)
        raw.setFormatter(JsonFormatter())
        root.handlers[:] = [raw, handler]  # raw first: it sees each record before redaction
        yield log
    finally:
        root.handlers[:], level_before, sys.excepthook, threading.excepthook = saved
        root.setLevel(level_before)
        access.propagate = saved_propagate

"""The data directory: who is using it.

Every ``tillbox serve`` process holds a shared lock on ``<data>/server.lock`` for as
long as it runs (several processes, even on different ports, may share a data
directory). Commands that must have the directory to themselves (``restore``,
``db reset``) take the lock exclusively and fail at once if any server holds it.
The kernel drops the lock when a process dies, so a crash never leaves it behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = "server.lock"


class DataDirInUse(Exception):
    """A server is running on the data directory."""


@contextlib.contextmanager
def serving(data_dir: Path) -> Iterator[None]:
    """Held by a running server."""
    with _locked(data_dir, fcntl.LOCK_SH, "the data directory is being restored or reset; start when that is done"):
        yield


@contextlib.contextmanager
def exclusive(data_dir: Path) -> Iterator[None]:
    """Held by a command that must not run beside a server; raises DataDirInUse."""
    with _locked(data_dir, fcntl.LOCK_EX, f"a Tillbox server is running on {data_dir}; stop it first"):
        yield


@contextlib.contextmanager
def _locked(data_dir: Path, mode: int, busy_message: str) -> Iterator[None]:
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataDirInUse(busy_message) from None
        yield
    finally:
        os.close(fd)  # closing releases the lock

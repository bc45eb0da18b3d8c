"""The one helper that starts ``tillbox serve`` as a process: for the tests, the bench and
the binary's smoke test alike.

    with Server(workdir, "--workers", "2", env=environment({"TILLBOX_LOG_LEVEL": "info"})) as server:
        urllib.request.urlopen(server.base + "/healthz")

The server runs from the source tree (``SOURCE_TREE``) or from any other command (the
built binary), in ``cwd`` (where its default data directory ``tillbox-data`` lives), with
``--port 0``: the server binds a free port itself and names it in its "listening" log
line, which is read back here. A port is never picked here, closed, and bound later by
the server: another process could take it in between. The server is ready when /readyz
answers 200; every wait has a deadline, and a server that exits or does not come up in
time raises ``ServerFailed`` with what it wrote on standard error.

Standard library only: tests/binary/smoke.py runs it with the system Python, outside the
project's virtual environment. The server gets a process group of its own, so that
``kill()`` reaches every process below it (a one-file binary's bootloader and its Python
child, a supervisor and its workers), and Ctrl-C in the caller's terminal reaches only the
caller, which then stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

CHECKOUT = Path(__file__).resolve().parents[1]
#: ``tillbox`` from this checkout, on the Python running the caller.
SOURCE_TREE: tuple[str, ...] = (sys.executable, "-m", "entrypoints.cli")

READY_TIMEOUT = 30.0  # seconds; a loaded machine starts a server in 1-3
STOP_TIMEOUT = 10.0


class ServerFailed(RuntimeError):
    """The server exited, or did not come up in time; the message ends with its standard error."""


def environment(settings: Mapping[str, str] | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (this process's environment by default) without its ``TILLBOX_`` variables,
    so that nothing of the caller's shell leaks into a test, plus ``settings``."""
    source = os.environ if base is None else base
    clean = {name: value for name, value in source.items() if not name.startswith("TILLBOX_")}
    # This checkout's packages first: the virtualenv's editable install may point at another
    # checkout of the project (a git worktree shares its parent's .venv).
    clean["PYTHONPATH"] = os.pathsep.join(filter(None, (str(CHECKOUT), source.get("PYTHONPATH"))))
    return clean | dict(settings or {})


def run_tillbox(
    *args: str,
    cwd: Path,
    command: Sequence[str] = SOURCE_TREE,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    """One ``tillbox`` command to its end (``env`` as from ``environment()``, its default)."""
    return subprocess.run(
        [*command, *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        env=dict(environment() if env is None else env),
        timeout=timeout,
        check=False,
    )


def until(condition: Callable[[], Any], *, timeout: float, every: float = 0.05, what: str = "the condition") -> Any:
    """Poll ``condition`` until it returns something true, and return that; TimeoutError
    after ``timeout`` seconds. Exceptions from ``condition`` propagate."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} did not hold within {timeout:g} s")
        time.sleep(every)


async def until_async(
    condition: Callable[[], Awaitable[Any]], *, timeout: float, every: float = 0.05, what: str = "the condition"
) -> Any:
    """``until`` for a coroutine function, waiting on the event loop."""
    deadline = time.monotonic() + timeout
    while True:
        result = await condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} did not hold within {timeout:g} s")
        await asyncio.sleep(every)


class Server:
    """``tillbox serve --port 0 *args``, started and ready when the constructor returns.

    ``base`` is its URL, ``port`` its port, ``process`` the Popen (its pid is also its
    process group's id), ``ready_seconds`` how long it took from exec to the first 200 from
    /readyz, ``stderr`` all it has written on standard error so far (its JSON log).
    ``stdout`` (the access log) goes where the caller says: nowhere by default.
    """

    def __init__(
        self,
        cwd: Path,
        *args: str,
        command: Sequence[str] = SOURCE_TREE,
        env: Mapping[str, str] | None = None,
        stdout: int | IO[Any] | None = subprocess.DEVNULL,
        ready_timeout: float = READY_TIMEOUT,
        poll_seconds: float = 0.05,
    ) -> None:
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._eof = False
        started = time.perf_counter()
        deadline = time.monotonic() + ready_timeout
        self.process = subprocess.Popen(
            [*command, "serve", "--port", "0", *args],
            cwd=cwd,
            env=dict(environment() if env is None else env),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read_stderr, name="tillbox-stderr", daemon=True)
        self._reader.start()
        try:
            url = self._listening_url(deadline)
            parts = urllib.parse.urlsplit(url)
            self.port = int(parts.port or 0)
            host = parts.hostname or "127.0.0.1"
            if host in ("0.0.0.0", "::"):  # every address: connect through the loopback
                host = "127.0.0.1"
            self.base = f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"
            self._wait_until_ready(deadline, poll_seconds)
        except BaseException:
            self.kill()
            raise
        self.ready_seconds = time.perf_counter() - started

    # Standard error.
    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        with self.process.stderr:
            for raw in self.process.stderr:
                with self._changed:
                    self._lines.append(raw.decode(errors="replace").rstrip("\n"))
                    self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    @property
    def stderr(self) -> str:
        with self._changed:
            return "\n".join(self._lines)

    def log(self) -> list[dict[str, Any]]:
        """The JSON lines of its log so far (a line that is not JSON is left out)."""
        with self._changed:
            lines = list(self._lines)
        entries = []
        for line in lines:
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    entries.append(entry)
        return entries

    def _listening_url(self, deadline: float) -> str:
        seen = 0
        with self._changed:
            while True:
                for line in self._lines[seen:]:
                    with contextlib.suppress(ValueError):
                        entry = json.loads(line)
                        if isinstance(entry, dict) and entry.get("message") == "listening" and "url" in entry:
                            return str(entry["url"])
                seen = len(self._lines)
                if self._eof:
                    code = self.process.wait()
                    raise ServerFailed(self._failure(f"the server exited with {code} before it listened"))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ServerFailed(self._failure("the server did not log where it listens in time"))
                self._changed.wait(left)

    def _wait_until_ready(self, deadline: float, every: float) -> None:
        while True:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise ServerFailed(self._failure(f"the server exited with {code} before it was ready"))
            try:
                with urllib.request.urlopen(self.base + "/readyz", timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass  # not serving yet, or not ready (503: HTTPError is an OSError)
            if time.monotonic() >= deadline:
                raise ServerFailed(self._failure(f"{self.base}/readyz did not answer 200 in time"))
            time.sleep(every)

    def _failure(self, what: str, lines: int = 40) -> str:
        with self._changed:
            tail = self._lines[-lines:]
        return f"{what}; its standard error (last {len(tail)} lines):\n" + "\n".join(tail)

    # Stopping.
    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, as an operator (or systemd) stops it; its exit code once it has exited.
        subprocess.TimeoutExpired if it is still running after ``timeout`` seconds."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        """Its exit code once it has exited and its standard error is read to the end."""
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout)
        return code

    def kill(self) -> None:
        """SIGKILL to its whole process group, unless it has exited already; then reap it."""
        if self.process.returncode is None:  # not reaped: its pid, the group's id, is still ours
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._reader.join(STOP_TIMEOUT)

    def descendants(self) -> list[int]:
        """Every process below the server's (a one-file binary's Python child, a supervisor's workers)."""
        return descendants(self.process.pid)

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.kill()


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from /proc (children first, then theirs)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):  # the process ended while we looked
            continue
    found: list[int] = []
    level = [pid]
    while level:
        level = [child for child, parent in parents.items() if parent in level]
        found += level
    return found

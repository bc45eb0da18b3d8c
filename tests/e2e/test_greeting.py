"""``tillbox serve`` on a terminal says, in words, where it listens, where ``/docs`` is and,
while the store has no active admin, the command that creates one. Anywhere else (a pipe, a
file, a journal) it writes JSON lines only."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from core.domain.errors import LastAdmin
from tests.e2e.test_cli import PASSWORD, tillbox
from tests.harness import environment

TILLBOX = Path(sys.executable).parent / "tillbox"  # the console script, as `make run` starts it
CREATE_ADMIN = f"{TILLBOX} users create --email you@example.com --role admin"
DEADLINE = 30.0


def _environment() -> dict[str, str]:
    return environment()


def _on_a_terminal(cwd: Path, *args: str, until: str, count: int = 1) -> str:
    """Run ``tillbox serve`` with a pseudo-terminal as its standard output and error until
    ``until`` has appeared ``count`` times, stop it, and give everything it wrote."""
    main, terminal = pty.openpty()
    process = subprocess.Popen(
        [str(TILLBOX), "serve", "--port", "0", *args],  # the port it binds is in the "listening" line
        cwd=cwd,
        env=_environment(),
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    try:
        written = _read(main, process, lambda text: text.count(until) >= count)
        assert written.count(until) >= count, written
        process.send_signal(signal.SIGTERM)
        written += _read(main, process, lambda _: False)  # until it has stopped
        assert process.wait(timeout=DEADLINE) == 0, written
        return written.replace("\r\n", "\n")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(main)


def _read(main: int, process: subprocess.Popen[bytes], done: object) -> str:
    text = ""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline and not done(text):  # type: ignore[operator]
        ready, _, _ = select.select([main], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the terminal's other end is closed, every writer is gone
                break
            if not chunk:
                break
            text += chunk.decode(errors="replace")
        elif process.poll() is not None:
            break
    return text


def _human_lines(written: str) -> list[str]:
    return [line for line in written.splitlines() if line and not line.startswith("{")]


def _create_admin(cwd: Path) -> None:
    created = tillbox(
        "users", "create", "--email", "boss@example.com", "--role", "admin", "--password-stdin",
        cwd=cwd, stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr


def _port(written: str) -> str:
    [listening] = [json.loads(line) for line in written.splitlines() if line.startswith("{") and '"listening"' in line]
    return str(listening["url"].rsplit(":", 1)[1])


def test_on_a_terminal_it_says_where_it_listens_and_how_to_create_the_first_admin(tmp_path: Path) -> None:
    written = _on_a_terminal(tmp_path, until="Press Ctrl-C to stop.")
    port = _port(written)
    assert _human_lines(written) == [
        f"Tillbox is serving on http://127.0.0.1:{port}",
        f"  API reference: http://127.0.0.1:{port}/docs",
        "  There is no admin yet. Create one (it asks for a password) with:",
        f"    {CREATE_ADMIN}",
        "  Press Ctrl-C to stop.",
    ]


def test_once_an_active_admin_exists_the_command_is_no_longer_suggested(tmp_path: Path) -> None:
    _create_admin(tmp_path)
    written = _on_a_terminal(tmp_path, until="Press Ctrl-C to stop.")
    port = _port(written)
    assert _human_lines(written) == [
        f"Tillbox is serving on http://127.0.0.1:{port}",
        f"  API reference: http://127.0.0.1:{port}/docs",
        "  Press Ctrl-C to stop.",
    ]
    # A disabled admin is no admin: the command is suggested again. (Tillbox never disables
    # the last active admin itself; a store restored from elsewhere may have none.)
    refused = tillbox("users", "disable", "--email", "boss@example.com", cwd=tmp_path)
    assert (refused.returncode, refused.stderr) == (1, f"tillbox: error: {LastAdmin().message} (last_admin)\n")
    database = sqlite3.connect(tmp_path / "tillbox-data" / "tillbox.db", isolation_level=None)
    try:
        database.execute("UPDATE users SET status = 'disabled' WHERE email = 'boss@example.com'")
    finally:
        database.close()
    assert f"    {CREATE_ADMIN}" in _human_lines(_on_a_terminal(tmp_path, until="Press Ctrl-C to stop."))


def test_with_several_workers_it_says_it_once(tmp_path: Path) -> None:
    written = _on_a_terminal(tmp_path, "--workers", "2", until='"listening"', count=2)
    assert written.count("Tillbox is serving on") == 1, written


def test_without_a_terminal_only_json_lines_are_written(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [str(TILLBOX), "serve", "--port", "0"],
        cwd=tmp_path,
        env=_environment(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        first = process.stderr.readline()  # the first log line: listening, or why not
        assert json.loads(first)["message"] == "listening", first
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=DEADLINE)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    lines = [first, *err.splitlines(), *out.splitlines()]
    assert [json.loads(line)["message"] for line in lines if line.strip()][:1] == ["listening"]
    assert all(isinstance(json.loads(line), dict) for line in lines if line.strip())
    assert "users create" not in "".join(lines)

"""A terminal program driven as a person would drive it: in tmux, by keys, read off the screen.

Standard library only, like tests/binary/smoke.py (which runs on the system ``python3``)::

    with Terminal(workdir, [binary, "admin", "--config", config], env=env) as term:
        term.wait_for_text("sign in")
        term.type("admin@example.com")
        term.press("Enter")
        term.wait_for_cursor(lambda column, row: row > email_row, "the cursor in the password field")
        ...
        term.press("o")                      # an area by its key
        term.wait_for_text("Orders")
        term.press("Enter", "R")             # keys by tmux's names
        print(term.screen())
        term.press("q")
        assert term.wait_for_exit() == 0

Each terminal is a tmux server of its own (a socket in ``workdir``, no user configuration),
one session of one window at a fixed size: nothing is shared with another tmux on the
machine, and stopping it ends only what it started. The pane stays after the program exits
(``remain-on-exit``), so that its last screen and its exit status can still be read.
Waiting is polling the screen against a deadline, never a sleep that stands for a condition.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

#: How often a wait looks at the screen: each look is one ``tmux capture-pane`` (a few ms).
POLL_SECONDS = 0.01


class TerminalError(Exception):
    """tmux is missing or failed, or the screen did not show what was waited for in time
    (the message ends with the screen as it was)."""


class Terminal:
    def __init__(
        self,
        workdir: Path,
        command: Sequence[str],
        *,
        env: Mapping[str, str],
        width: int = 80,
        height: int = 24,
        term: str = "tmux-256color",
        name: str = "terminal",
    ) -> None:
        """Start ``command`` in a new detached tmux session of ``width`` x ``height``, with
        exactly ``env`` as its environment (tmux adds TMUX and TMUX_PANE) and ``term`` as its
        TERM, in ``workdir``."""
        tmux = shutil.which("tmux", path="/usr/bin:/bin:/usr/local/bin")
        if tmux is None:
            raise TerminalError("tmux is not installed (`make smoke` installs it)")
        self._tmux = tmux
        self._socket = workdir / f"{name}.tmux"
        config = workdir / f"{name}.tmux.conf"
        config.write_text(
            # The last screen and the exit status stay readable after the program exits.
            "set-option -g remain-on-exit on\n"
            f"set-option -g default-terminal {term}\n"
            # Escape reaches the program at once instead of after tmux's 500 ms wait for
            # the rest of an escape sequence.
            "set-option -s escape-time 0\n",
            encoding="utf-8",
        )
        self.exit_status: int | None = None
        self.started = time.perf_counter()
        self._run(
            "-f",
            str(config),
            "new-session",
            "-d",
            "-x",
            str(width),
            "-y",
            str(height),
            "-c",
            str(workdir),
            "--",
            *command,
            env={**env, "TERM": term},
        )

    def _run(self, *args: str, env: Mapping[str, str] | None = None) -> str:
        done = subprocess.run(
            [self._tmux, "-S", str(self._socket), *args],
            capture_output=True,
            text=True,
            env=dict(env) if env is not None else {"PATH": "/usr/bin:/bin"},
            check=False,
            timeout=10,
        )
        if done.returncode != 0:
            raise TerminalError(f"tmux {' '.join(args[:2])} failed: {done.stderr.strip()}")
        return done.stdout

    # Keys.
    def type(self, text: str) -> None:
        """Type ``text`` as it is (no key names)."""
        self._run("send-keys", "-l", "--", text)

    def press(self, *keys: str) -> None:
        """Press keys by tmux's names: ``Enter``, ``Escape``, ``Tab``, ``C-c``, ``q``..."""
        self._run("send-keys", "--", *keys)

    # The screen.
    def screen(self) -> str:
        """The visible screen as text, one line per row (trailing spaces dropped)."""
        return self._run("capture-pane", "-p")

    def cursor(self) -> tuple[int, int]:
        """Where the terminal's cursor is, (column, row) from 0: Textual puts it in the
        focused input, so it tells which field the next keys go to."""
        column, _, row = self._run("display-message", "-p", "#{cursor_x} #{cursor_y}").strip().partition(" ")
        return int(column), int(row)

    def wait_for_cursor(self, condition: Callable[[int, int], bool], what: str, timeout: float = 20.0) -> None:
        """Poll until ``condition(column, row)`` holds for the cursor. Wait so after a key that
        moves the focus (Enter in a form's field) before typing on, as a person looks first:
        Textual gives each key to the widget focused when the key is handled, and the focus
        moves only after the Enter has been, so keys sent at once would land in the old field."""
        self.wait_for(lambda _: condition(*self.cursor()), what, timeout)

    def wait_for(self, condition: Callable[[str], bool], what: str, timeout: float = 20.0) -> str:
        """Poll the screen until ``condition(screen)`` holds; give that screen."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if condition(screen):
                return screen
            if self.exited():
                raise TerminalError(f"the program exited ({self.exit_status}) before {what}; its screen:\n{screen}")
            if time.monotonic() > deadline:
                raise TerminalError(f"no {what} within {timeout:.0f} s; the screen:\n{screen}")
            time.sleep(POLL_SECONDS)

    def wait_for_text(self, text: str, timeout: float = 20.0, *, ignore_case: bool = True) -> str:
        """Poll the screen until ``text`` shows on it (anywhere, one row); give that screen."""
        wanted = text.lower() if ignore_case else text

        def shown(screen: str) -> bool:
            return wanted in (screen.lower() if ignore_case else screen)

        return self.wait_for(shown, f"{text!r} on the screen", timeout)

    # The program.
    def pid(self) -> int:
        """The program's process id (for a one-file binary: its bootloader's)."""
        return int(self._run("display-message", "-p", "#{pane_pid}").strip())

    def exited(self) -> bool:
        """Whether the program has ended; its exit status is then in ``exit_status`` (the
        negated signal number when a signal ended it, as subprocess does)."""
        fields = self._run("display-message", "-p", "#{pane_dead}:#{pane_dead_status}:#{pane_dead_signal}")
        dead, status, signal = fields.strip().split(":")
        if dead != "1":
            return False
        self.exit_status = int(status) if status else -int(signal or 0)
        return True

    def wait_for_exit(self, timeout: float = 10.0) -> int:
        """Wait until the program has ended; give its exit status."""
        deadline = time.monotonic() + timeout
        while not self.exited():
            if time.monotonic() > deadline:
                raise TerminalError(f"still running {timeout:.0f} s later; the screen:\n{self.screen()}")
            time.sleep(POLL_SECONDS)
        assert self.exit_status is not None
        return self.exit_status

    def stop(self) -> None:
        """End the tmux server and what runs in it (SIGHUP to the program if still running)."""
        subprocess.run(
            [self._tmux, "-S", str(self._socket), "kill-server"],
            capture_output=True,
            env={"PATH": "/usr/bin:/bin"},
            check=False,
            timeout=10,
        )
        self._socket.unlink(missing_ok=True)

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

"""How fast ``tillbox admin`` is ready for staff, in a terminal (tmux, 80x24): figures, no assertions.

    python3 bench/console_startup.py [EXECUTABLE] [--runs 7]

EXECUTABLE defaults to dist/tillbox (``make binary``); ``.venv/bin/tillbox`` gives the
figures without the one-file bootloader. Standard library only, with tmux (tests/binary/tmux.py).

Each run is a new process on the same shop (an admin account made once, with
``users create``), driven as staff would drive it:

- sign-in screen: exec of ``tillbox admin`` to "sign in" on the screen (polled every 10 ms
  with ``tmux capture-pane``; each poll costs a few ms, so figures are within ~15 ms), and
  the CPU time its processes had used by then (on a busy machine the wall time grows with
  the load, the CPU time much less);
- store open: exec to the sign-in screen naming the store (the store opens in a worker
  once the screen is up; until then a sign-in waits);
- dashboard: the Enter that submits the password to the dashboard's figures on the screen
  (the password check, argon2, is most of it).

Target (issue 9): the sign-in screen in under 1 s, median. On a shared machine the load
average printed beside the figures says how far to trust them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.binary.tmux, standard library only like this script

from tests.binary.tmux import Terminal  # noqa: E402

EMAIL = "bench@example.com"
PASSWORD = "bench console passphrase 8164"  # noqa: S105 - a throwaway account in a temporary directory
TARGET_SECONDS = 1.0


def environment(workdir: Path) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "LANG": "C.UTF-8", "TMPDIR": str(workdir)}


def prepare(executable: Path, workdir: Path) -> Path:
    """A shop with an admin account; its configuration file."""
    config = workdir / "config.toml"
    config.write_text(f'[data]\ndir = "{workdir / "shop"}"\n', encoding="utf-8")
    create = ("users", "create", "--config", str(config), "--email", EMAIL, "--role", "admin", "--password-stdin")
    subprocess.run(
        [str(executable), *create],
        input=PASSWORD + "\n",
        text=True,
        cwd=workdir,
        env=environment(workdir),
        check=True,
        capture_output=True,
    )
    return config


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) used so far by ``pid`` and the processes below it."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue  # it has just exited
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14, 15)
        pending.extend(int(child) for child in children)
    return total


def one_run(executable: Path, workdir: Path, config: Path) -> tuple[float, float, float, float]:
    """Seconds to the sign-in screen (and CPU seconds used by then), to the store open, and
    from the password's Enter to the dashboard."""
    command = [str(executable), "admin", "--config", str(config)]
    with Terminal(workdir, command, env=environment(workdir), name="bench") as terminal:
        terminal.wait_for_text("sign in")
        sign_in = time.perf_counter() - terminal.started
        cpu = cpu_seconds(terminal.pid())
        terminal.wait_for_text("Store:")
        store = time.perf_counter() - terminal.started
        terminal.type(EMAIL)
        typed = terminal.wait_for_text(EMAIL)
        email_row = next(n for n, line in enumerate(typed.splitlines()) if EMAIL in line)
        terminal.press("Enter")
        terminal.wait_for_cursor(lambda _, row: row > email_row, "the cursor in the password field")
        terminal.type(PASSWORD)
        submitted = time.perf_counter()
        terminal.press("Enter")
        terminal.wait_for_text("(schema version")
        dashboard = time.perf_counter() - submitted
        terminal.press("q")
        status = terminal.wait_for_exit()
        if status != 0:
            raise SystemExit(f"tillbox admin exited {status}")
    return sign_in, cpu, store, dashboard


def fmt(values: list[float]) -> str:
    return " ".join(f"{v:.3f}" for v in values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("executable", nargs="?", default=str(ROOT / "dist" / "tillbox"))
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    executable = Path(args.executable).absolute()
    if not executable.is_file():
        print(f"{executable} does not exist (make binary)", file=sys.stderr)
        return 1

    scratch = Path(tempfile.mkdtemp(prefix="tillbox-console-startup-"))
    try:
        averages = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"machine           {os.cpu_count()} CPUs, load average {averages} (1, 5, 15 min) at the start")
        print(f"executable        {executable}")
        config = prepare(executable, scratch)
        runs = [one_run(executable, scratch, config) for _ in range(args.runs)]
        sign_ins, cpus, stores, dashboards = (list(column) for column in zip(*runs, strict=True))
        median = statistics.median(sign_ins)
        verdict = "within" if median < TARGET_SECONDS else "OVER"
        print(
            f"sign-in screen    median {median:.3f} s   (runs: {fmt(sign_ins)})"
            f"   target < {TARGET_SECONDS:.1f} s: {verdict}"
        )
        print("                  exec of `tillbox admin` to 'sign in' on the screen, tmux 80x24")
        print(f"  CPU used by then median {statistics.median(cpus):.3f} s   (runs: {fmt(cpus)})")
        print("                  user and system time of its processes: what a busy machine does not inflate")
        print(f"store open        median {statistics.median(stores):.3f} s   (runs: {fmt(stores)})")
        print("                  exec to the sign-in screen naming the store")
        print(f"dashboard         median {statistics.median(dashboards):.3f} s   (runs: {fmt(dashboards)})")
        print("                  the password's Enter to the dashboard's figures (argon2 included)")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"load average      {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())

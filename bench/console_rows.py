"""How long the admin console takes to show the first rows of each screen on a large store:
figures, no assertions.

    .venv/bin/python bench/console_rows.py --config PATH --email E [--password-stdin] [--runs 5]

The store is the one the configuration names (for a large one: `tillbox db seed --count
100000 --orders 1000000`, then `tillbox users create --role admin`). The real console
(the source tree's, in this process, at 80x24, driven by Textual's Pilot) signs in as the
given admin, then presses each area's key in turn, N rounds, and times from the key to the
moment the screen shows what it read (a list's first page on screen); the dashboard once,
from the sign-in's Enter to its figures. Printed per screen: median and worst, in milliseconds, and the store's size.
"No visible wait" is well under 100 ms for a key press; a list read on a slow read unit
runs in a worker, so the interface never freezes meanwhile, whatever the figure.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from entrypoints.console.app import AdminConsole  # noqa: E402 - after the path is set
from entrypoints.console.run import open_services  # noqa: E402
from entrypoints.console.screens import AREAS  # noqa: E402
from entrypoints.console.screens.common import ListScreen  # noqa: E402
from entrypoints.settings import find_config, load_settings  # noqa: E402

TIMEOUT = 20.0


def _status(app: AdminConsole) -> str:
    if app.current_mode != "dashboard":
        return ""
    return str(app.screen.query_one("#status").render())


def _loads(screen: Any) -> int:
    """A screen's completed reads (ListScreen and the dashboard count theirs)."""
    return int(getattr(screen, "loads", 0))


async def _until(pilot: Any, condition: Any, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            screen = pilot.app.screen
            shown = str(screen.query_one("#status").render()) if screen.query("#status") else ""
            raise SystemExit(
                f"console_rows: {what} did not happen within {TIMEOUT:g} s"
                f" ({type(screen).__name__}, reads {_loads(screen)}, {shown!r})"
            )
        await asyncio.sleep(0.01)  # not pilot.pause: its idle wait, polled this often, starves the app


async def measure(config: str, email: str, password: str, runs: int) -> dict[str, list[float]]:
    settings = load_settings(find_config(config, os.environ), os.environ)
    app = AdminConsole(lambda: open_services(settings))
    figures: dict[str, list[float]] = {area.name: [] for area in AREAS}
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await _until(pilot, lambda: app.services is not None or app.store_problem, "the store to open")
            if app.store_problem:
                raise SystemExit(f"console_rows: {app.store_problem}")
            app.screen.query_one("#email").value = email  # type: ignore[attr-defined]
            app.screen.query_one("#password").value = password  # type: ignore[attr-defined]
            app.screen.action_next_or_sign_in()  # type: ignore[attr-defined]
            app.screen.action_next_or_sign_in()  # type: ignore[attr-defined]
            signing_in = time.perf_counter()
            await _until(pilot, lambda: app.actor is not None, "sign-in")
            await _until(pilot, lambda: "as of" in _status(app), "the dashboard's figures")
            figures["dashboard"].append((time.perf_counter() - signing_in) * 1000)
            lists = [area for area in AREAS if issubclass(area.screen, ListScreen)]
            for _ in range(runs):
                for area in lists:
                    app.set_focus(None)
                    # Its reads so far (none the first time): counted before the key, since a
                    # read on a small store may be done before the screen is seen to be up.
                    stack = app._screen_stacks.get(area.name) or []  # Textual's modes (private)
                    before = _loads(stack[0]) if stack else 0
                    started = time.perf_counter()
                    await pilot.press(area.key)
                    await _until(pilot, lambda area=area: isinstance(app.screen, area.screen), f"{area.name} to open")
                    screen = app.screen
                    await _until(pilot, lambda s=screen, b=before: _loads(s) > b, f"{area.name}'s first rows")
                    figures[area.name].append((time.perf_counter() - started) * 1000)
    finally:
        await app.close_store()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--email", required=True)
    parser.add_argument("--password-stdin", action="store_true")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass()
    figures = asyncio.run(measure(args.config, args.email, password, args.runs))
    print(f"console: time from a screen's key to its first rows, {args.runs} rounds, 80x24 ({args.config})")
    for name, times in figures.items():
        if times:  # the dashboard: one figure, from the sign-in
            print(f"  {name:<10} median {statistics.median(times):8.1f} ms   worst {max(times):8.1f} ms")


if __name__ == "__main__":
    main()

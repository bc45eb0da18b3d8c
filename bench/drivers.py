"""Child processes and load for bench/run.py: wrk, or bench/loadgen.py where wrk is missing.

Each load stream is a child process of its own, so that two streams (the catalog list and
a trickle of logins) can run at the same time and neither generator slows the other.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
WRK_THREADS = 2


class HarnessError(Exception):
    """The benchmark could not be run (as opposed to: it ran and the figures are bad)."""


class Processes:
    """Every child of the harness that outlives one call, so that each one is stopped whatever happens."""

    def __init__(self) -> None:
        self._children: list[subprocess.Popen[Any]] = []

    def start(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        # A session of its own: Ctrl-C reaches only the harness, which then stops the
        # children itself, in order, instead of racing them to the exit.
        child = subprocess.Popen(argv, start_new_session=True, **kwargs)
        self._children.append(child)
        return child

    def adopt(self, child: subprocess.Popen[Any]) -> None:
        """A child started elsewhere (the Tillbox server, by tests/harness.py), stopped with the rest."""
        self._children.append(child)

    def stop_all(self, grace: float = 15.0) -> None:
        """SIGTERM to all (Tillbox then finishes in-flight requests and flushes its log), SIGKILL to stragglers."""
        running = [child for child in self._children if child.poll() is None]
        for child in running:
            child.terminate()
        deadline = time.monotonic() + grace
        for child in running:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


@dataclass(frozen=True)
class Load:
    url: str
    connections: int
    method: str = "GET"
    body: str = ""
    headers: tuple[str, ...] = ()
    paths: str | None = None  # a file of paths (with queries), one a line: each request one at random


@dataclass
class Measurement:
    requests: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    statuses: dict[str, int]
    errors: dict[str, int] = field(default_factory=dict)  # socket errors (wrk) or client exceptions
    # Requests the generator built, where it counted them (a header with "{unique}"): with
    # wrk, those still in flight when it hung up at its deadline are sent but not answered.
    sent: int | None = None

    @property
    def non_2xx(self) -> int:
        return sum(count for status, count in self.statuses.items() if not status.startswith("2"))

    def other_than(self, status: str) -> int:
        """Answers with any status but this one (a 200 where a 201 was due counts)."""
        return sum(count for code, count in self.statuses.items() if code != status)


_WRK_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


class Wrk:
    """wrk with bench/wrk.lua. Its response hook costs the bare endpoint about 4% of its
    req/s here, the price of knowing every status code; both sides pay it."""

    client_bound = False

    def __init__(self, path: str) -> None:
        self.path = path
        version = subprocess.run([path, "-v"], capture_output=True, text=True, check=False)
        self.description = f"{(version.stdout or version.stderr).split(' [')[0].strip()}, {WRK_THREADS} threads"

    def command(self, load: Load, seconds: int) -> list[str]:
        return [
            self.path,
            f"--threads={min(WRK_THREADS, load.connections)}",
            f"--connections={load.connections}",
            f"--duration={seconds}s",
            # wrk counts an answer slower than its timeout (2 s by default) as an error and
            # leaves it out of the latencies; 64 queued logins take about 1.5 s each.
            "--timeout=30s",
            "--latency",
            f"--script={BENCH / 'wrk.lua'}",
            load.url,
            "--",
            load.method,
            load.body,
            *load.headers,
            *([f"@paths={load.paths}"] if load.paths else []),
        ]

    def parse(self, output: str) -> Measurement:
        def first(pattern: str, what: str) -> re.Match[str]:
            found = re.search(pattern, output, re.MULTILINE)
            if found is None:
                raise HarnessError(f"wrk printed no {what}:\n{output}")
            return found

        def percentile_ms(label: str) -> float:
            found = first(rf"^\s+{label}%\s+([\d.]+)(us|ms|s|m)\s*$", f"{label}% latency")
            return float(found.group(1)) * _WRK_UNITS_MS[found.group(2)]

        # The line bench/wrk.lua's done() prints: "bench-statuses non2xx=N 200=123 401=4".
        counts = first(r"^bench-statuses non2xx=\d+(.*)$", "status counts (bench/wrk.lua's done hook)").group(1)
        statuses = {status: int(count) for status, count in (pair.split("=") for pair in counts.split())}
        errors: dict[str, int] = {}
        socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
        if socket_errors is not None:
            for kind, count in zip(("connect", "read", "write", "timeout"), socket_errors.groups(), strict=True):
                if int(count):
                    errors[kind] = int(count)
        sent = re.search(r"^bench-sent (\d+)$", output, re.MULTILINE)  # only for "{unique}" headers
        return Measurement(
            requests=int(first(r"^\s+(\d+) requests in", "request count").group(1)),
            requests_per_second=float(first(r"^Requests/sec:\s+([\d.]+)", "Requests/sec").group(1)),
            p50_ms=percentile_ms("50"),
            p99_ms=percentile_ms("99"),
            statuses=statuses,
            errors=errors,
            sent=int(sent.group(1)) if sent else None,
        )


class PythonLoad:
    """bench/loadgen.py: slower than the servers it measures on a small machine."""

    client_bound = True

    def __init__(self, why: str) -> None:
        self.description = f"bench/loadgen.py, a Python aiohttp client ({why})"

    def command(self, load: Load, seconds: int) -> list[str]:
        argv = [sys.executable, str(BENCH / "loadgen.py"), f"--url={load.url}", f"--method={load.method}"]
        argv += [f"--connections={load.connections}", f"--duration={seconds}"]
        if load.body:
            argv.append(f"--body={load.body}")
        if load.paths:
            argv.append(f"--paths={load.paths}")
        return argv + [f"--header={header}" for header in load.headers]

    def parse(self, output: str) -> Measurement:
        try:
            result = json.loads(output.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise HarnessError(f"bench/loadgen.py printed no result:\n{output}") from None
        return Measurement(
            requests=result["requests"],
            requests_per_second=result["requests_per_second"],
            p50_ms=result["p50_ms"],
            p99_ms=result["p99_ms"],
            statuses=result["statuses"],
            errors=result["errors"],
            sent=result.get("sent"),
        )


Generator = Wrk | PythonLoad


def choose_load_generator(choice: str) -> Generator:
    wrk = shutil.which("wrk")
    if choice == "wrk" and wrk is None:
        raise HarnessError("--load wrk, but wrk is not on PATH")
    if choice == "python" or wrk is None:
        return PythonLoad("--load python" if choice == "python" else "wrk is not on PATH")
    return Wrk(wrk)


def drive(generator: Generator, processes: Processes, loads: list[Load], seconds: int) -> list[Measurement]:
    """Run every load at once for `seconds`; one measurement per load, in order."""
    children = [
        processes.start(generator.command(load, seconds), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for load in loads
    ]
    outputs = []
    for child in children:
        try:
            output, _ = child.communicate(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            raise HarnessError(f"the load generator did not finish within {seconds + 60} s") from None
        if child.returncode != 0:
            raise HarnessError(f"the load generator failed (status {child.returncode}):\n{output}")
        outputs.append(output)
    return [generator.parse(output) for output in outputs]

"""What a hostile request body costs the server: figures, no assertions.

    .venv/bin/python bench/hostile_bodies.py [--runs 20]

Three processes, so that none's work shows in another's figures: the server (the
application on a port it binds itself, over a fresh data directory), a flooder, and this
one, which sends the measured requests. "Server CPU" of a request is the time the
server's event-loop thread spent on a CPU (/proc/<pid>/schedstat, nanoseconds) from just
before the request is sent to just after its answer arrived: reading the body off the
socket, parsing, validating, answering.

- each body: server CPU per request, median and maximum of --runs, with its answer;
  among them the issue's 200,000 empty order lines (586 KiB; target: under 50 ms);
- /healthz, one check after another, while the flooder's four connections send that
  body without pause: how long each check takes, and how many floods were refused meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import aiohttp

EMAIL = "hostile@bench.example"
PASSWORD = "a bench passphrase 8841"  # noqa: S105 - a throwaway account in a temporary directory
FLOOD_CONNECTIONS = 4


def run_server(data_dir: str, conn: Connection) -> None:
    """The server process: the application on port 0; the port it got goes back through ``conn``."""
    from aiohttp import web

    from core.domain.users import Actor, Role
    from core.services.auth import CreateUser
    from entrypoints.container import build_container
    from entrypoints.http.app import create_app
    from entrypoints.server import event_loop_factory
    from entrypoints.settings import load_settings

    async def main() -> None:
        env = {"TILLBOX_DATA_DIR": data_dir, "TILLBOX_SERVER_ACCESS_LOG": "false"}
        container = build_container(load_settings(None, env))
        runner = web.AppRunner(create_app(container), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        auth = await container.auth_service()
        await auth.create_user(CreateUser(actor=Actor.operator(), email=EMAIL, password=PASSWORD, role=Role.CUSTOMER))
        gc.collect()  # as `tillbox serve` does once started: start-up objects out of the collector's sight
        gc.freeze()
        conn.send(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        try:
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # until told to stop
        finally:
            await runner.cleanup()

    with asyncio.Runner(loop_factory=event_loop_factory()) as loop:  # uvloop, as `tillbox serve`
        loop.run(main())


def run_flooder(url: str, token: str, body: str, stop: Event, refused: Any) -> None:
    """The flooder process: FLOOD_CONNECTIONS connections sending ``body`` until ``stop``."""

    async def main() -> None:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        async with aiohttp.ClientSession() as session:

            async def one() -> None:
                while not stop.is_set():
                    async with session.post(url, data=body, headers=headers) as response:
                        await response.read()
                        if response.status == 422:
                            with refused.get_lock():
                                refused.value += 1

            await asyncio.gather(*(one() for _ in range(FLOOD_CONNECTIONS)))

    asyncio.run(main())


def schedstat(pid: int) -> tuple[float, float]:
    """Seconds the process's main thread (the server's event loop) has spent on a CPU, and
    runnable but waiting for one (a busy machine)."""
    on_cpu, waiting, _ = Path(f"/proc/{pid}/schedstat").read_text().split()
    return int(on_cpu) / 1e9, int(waiting) / 1e9


def on_cpu(pid: int) -> float:
    return schedstat(pid)[0]


def bodies() -> dict[str, Callable[[], str]]:
    deep = "[" * 1_000 + "]" * 1_000
    return {
        "a good order (2 lines), for scale": lambda: json.dumps(
            {"items": [{"sku": "NONE-1", "quantity": 1}, {"sku": "NONE-2", "quantity": 2}]}
        ),
        "one empty line": lambda: json.dumps({"items": [{}]}),
        "200,000 empty lines (the issue's)": lambda: json.dumps({"items": [{}] * 200_000}, separators=(",", ":")),
        "60,000 unknown fields": lambda: json.dumps({f"field{i}": 0 for i in range(60_000)}),
        "150 lines of 500 unknown fields each": lambda: json.dumps(
            {"items": [{f"k{i}": 0 for i in range(500)}] * 150}, separators=(",", ":")
        ),
        "a 900 KB string as a line": lambda: json.dumps({"items": ["x" * 900_000]}),
        "100 lines nested 1,000 deep": lambda: '{"items":[' + ",".join([deep] * 100) + "]}",
    }


async def measure(base: str, pid: int, runs: int, context: Any) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(base + "/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD}) as response:
            token = (await response.json())["access_token"]
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        url = base + "/api/v1/orders"

        print(f"server CPU per POST /api/v1/orders, {runs} runs each (median / max), and the answer:")
        for label, make in bodies().items():
            raw = make().encode()
            samples = []
            answer: Any = None
            for _ in range(runs + 1):  # the first, discarded, warms caches and the connection
                before = on_cpu(pid)
                async with session.post(url, data=raw, headers=headers) as response:
                    answer = (response.status, await response.json())
                samples.append(on_cpu(pid) - before)
            samples = samples[1:]
            status, body = answer
            error = body.get("error", {})
            details = error.get("details", {})
            summary = f"{status} {error.get('code', '')}, {len(details.get('fields', {}))} fields"
            if details.get("truncated"):
                summary += ", truncated"
            print(
                f"  {label:<38} {len(raw) / 1024:>5.0f} KiB "
                f"{statistics.median(samples) * 1000:>7.2f} / {max(samples) * 1000:>6.2f} ms   {summary}"
            )

        print(f"\n/healthz, 100 checks one after another, alone and while {FLOOD_CONNECTIONS} connections")
        print("send the 200,000-line body without pause:")
        await health_checks(session, base, pid, "alone", None)
        stop = context.Event()
        refused = context.Value("i", 0)
        flood = bodies()["200,000 empty lines (the issue's)"]()
        flooder = context.Process(target=run_flooder, args=(url, token, flood, stop, refused))
        flooder.start()
        try:
            while refused.value < 4 * FLOOD_CONNECTIONS:  # noqa: ASYNC110 - a counter of another process
                await asyncio.sleep(0.05)  # until the flood is under way
            await health_checks(session, base, pid, "flooded", refused)
        finally:
            stop.set()
            flooder.join(30)


async def health_checks(session: aiohttp.ClientSession, base: str, pid: int, label: str, refused: Any) -> None:
    latencies = []
    before, refused_before, started = schedstat(pid), refused.value if refused else 0, time.perf_counter()
    for _ in range(100):
        sent = time.perf_counter()
        async with session.get(base + "/healthz") as response:
            assert response.status == 200, response.status
            await response.read()
        latencies.append(time.perf_counter() - sent)
    elapsed = time.perf_counter() - started
    after = schedstat(pid)
    cpu, waited = after[0] - before[0], after[1] - before[1]
    floods = refused.value - refused_before if refused else 0
    latencies.sort()
    line = (
        f"  {label:<8} p50 {statistics.median(latencies) * 1000:6.1f} ms, p99 {latencies[98] * 1000:6.1f} ms, "
        f"max {latencies[-1] * 1000:6.1f} ms; the server's loop on a CPU {cpu / elapsed:4.0%} of the time, "
        f"waiting for one {waited / elapsed:4.0%}"
    )
    if refused is not None:
        line += f"; {floods} floods refused meanwhile, {cpu / max(floods, 1) * 1000:.1f} ms of its CPU each"
    print(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="requests per body (default 20)")
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="tillbox-hostile-") as tmp:
        ours, theirs = context.Pipe()
        server = context.Process(target=run_server, args=(str(Path(tmp) / "data"), theirs))
        server.start()
        try:
            if not ours.poll(60):
                raise SystemExit("the server did not start")
            port = ours.recv()
            assert server.pid is not None
            asyncio.run(measure(f"http://127.0.0.1:{port}", server.pid, args.runs, context))
        finally:
            ours.send("stop")
            server.join(15)
            if server.is_alive():
                server.terminate()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A Python load generator for `make bench` on machines without wrk.

    .venv/bin/python bench/loadgen.py --url URL [--method POST --body JSON --header "Name: value"]
                                      [--connections 64] [--duration 10]

N connections, each a task sending its next request as soon as the previous answer is
read (closed loop, like wrk), for a fixed time. Prints one JSON object: requests, sent,
seconds, requests_per_second, p50_ms, p99_ms, statuses, errors. A header given as
"Name: {unique}" gets a value of its own in every request, as with bench/wrk.lua; a body
given as "@FILE" is one line of FILE, chosen at random for every request.

It is much slower than wrk: on a small machine the client, not the server, sets the
pace, and the ratios it gives compress towards 1. bench/run.py says so when it uses it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import time
from collections import Counter

import aiohttp


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest rank, as wrk reports it; 0.0 for no values."""
    if not sorted_values:
        return 0.0
    rank = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[rank]


async def generate(
    url: str,
    method: str,
    body: bytes | None,
    headers: dict[str, str],
    connections: int,
    duration: float,
    paths: list[str] | None = None,
) -> dict[str, object]:
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    bodies = None
    if body is not None and body.startswith(b"@"):
        with open(body[1:].decode(), encoding="utf-8") as lines:  # noqa: ASYNC230 - before the load starts
            bodies = [line.rstrip("\n").encode() for line in lines if line.strip()]
    unique = [name for name, value in headers.items() if value == "{unique}"]
    nonce = secrets.token_hex(6)
    origin = "/".join(url.split("/", 3)[:3])  # scheme://host:port, for the paths
    sent = 0
    # One pooled connection per task, kept alive, as wrk does.
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        deadline = time.perf_counter() + duration

        async def connection(number: int) -> None:
            nonlocal sent
            mine = dict(headers)
            count = 0
            while (started := time.perf_counter()) < deadline:
                count += 1
                sent += 1
                for name in unique:
                    mine[name] = f"{nonce}-{number}-{count}"
                try:
                    data = random.choice(bodies) if bodies else body
                    target = origin + random.choice(paths) if paths else url
                    async with session.request(method, target, data=data, headers=mine) as response:
                        await response.read()
                        statuses[str(response.status)] += 1
                except (aiohttp.ClientError, TimeoutError) as e:
                    errors[type(e).__name__] += 1
                    await asyncio.sleep(0.01)  # a refused connection must not become a busy loop
                    continue
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(connection(number) for number in range(connections)))
        elapsed = time.perf_counter() - began

    latencies.sort()
    return {
        "requests": len(latencies),
        "sent": sent,
        "seconds": round(elapsed, 3),
        "requests_per_second": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "statuses": dict(statuses),
        "errors": dict(errors),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--method", default="GET")
    parser.add_argument("--body", default=None, help="sent as is; give Content-Type with --header")
    parser.add_argument("--header", action="append", default=[], help="'Name: value', repeatable")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds")
    parser.add_argument("--paths", default=None, help="a file of paths, one a line: each request one at random")
    args = parser.parse_args()

    headers = dict(h.split(":", 1) for h in args.header)
    headers = {name.strip(): value.strip() for name, value in headers.items()}
    body = args.body.encode() if args.body is not None else None
    try:
        import uvloop  # the client needs every cycle it can get
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    paths = None
    if args.paths:
        with open(args.paths, encoding="utf-8") as lines:
            paths = [line.strip() for line in lines if line.strip()]
    result = runner(generate(args.url, args.method, body, headers, args.connections, args.duration, paths))
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""The baseline for `make bench`: the least an aiohttp server can do for one GET.

    .venv/bin/python bench/bare.py [--port 9000]

One route, a small JSON body from web.json_response, no middleware, no access log.
It runs on uvloop because `tillbox serve` does: a baseline on the default asyncio
loop would be about 15% slower and flatter Tillbox's ratios.
"""

from __future__ import annotations

import argparse
import socket

import aiohttp
import uvloop  # a hard requirement: without it the comparison is not fair
from aiohttp import web


async def hello(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "n": 1})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 (the default): a free port, printed at start")
    args = parser.parse_args()

    app = web.Application()
    app.router.add_get("/", hello)
    loop = uvloop.new_event_loop()
    sock = socket.create_server((args.host, args.port))  # bound here, so that its port can be printed

    def announce(_: str) -> None:
        # One line, read by bench/run.py: the URL, then which loop the baseline really runs on.
        kind = f"{type(loop).__module__}.{type(loop).__qualname__}"
        url = f"http://{args.host}:{sock.getsockname()[1]}"
        banner = f"aiohttp {aiohttp.__version__} web.json_response on {kind} (uvloop {uvloop.__version__})"
        print(f"{url} {banner}", flush=True)

    web.run_app(app, sock=sock, access_log=None, print=announce, loop=loop)


if __name__ == "__main__":
    main()

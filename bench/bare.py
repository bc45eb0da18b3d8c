"""The baseline for `make bench`: the least an aiohttp server can do for one GET.

    .venv/bin/python bench/bare.py --port 9000

One route, a small JSON body from web.json_response, no middleware, no access log.
It runs on uvloop because `tillbox serve` does: a baseline on the default asyncio
loop would be about 15% slower and flatter Tillbox's ratios.
"""

from __future__ import annotations

import argparse

import aiohttp
import uvloop  # a hard requirement: without it the comparison is not fair
from aiohttp import web


async def hello(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "n": 1})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    app = web.Application()
    app.router.add_get("/", hello)
    loop = uvloop.new_event_loop()

    def announce(_: str) -> None:
        # bench/run.py prints this line: which loop the baseline really runs on.
        kind = f"{type(loop).__module__}.{type(loop).__qualname__}"
        print(f"aiohttp {aiohttp.__version__} web.json_response on {kind} (uvloop {uvloop.__version__})", flush=True)

    web.run_app(app, host=args.host, port=args.port, access_log=None, print=announce, loop=loop)


if __name__ == "__main__":
    main()

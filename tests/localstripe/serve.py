"""Run localstripe bound to one host, with its state in a file of our choosing.

localstripe itself listens on every interface (``::``) and pickles its whole store to
``/tmp/localstripe.pickle`` after every change, so two test runs on one machine would share
(and corrupt) each other's state, and the emulator would be reachable from the network.
This wrapper patches both before starting localstripe's aiohttp app, binds the socket
itself (port 0 means "any free port": no race between choosing and binding) and prints the
port on the first line of stdout for the parent to read.

    python tests/localstripe/serve.py --state /tmp/x/state.pickle [--host 127.0.0.1] [--port 0]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import pickle
import socket
import sys


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--state", type=pathlib.Path, required=True, help="the private state file")
    args = parser.parse_args(argv)
    state: pathlib.Path = args.state

    from aiohttp import web
    from localstripe import resources, server

    def try_load_from_disk(self: dict[str, object]) -> None:
        try:
            with state.open("rb") as f:
                old = pickle.load(f)  # noqa: S301 - our own file, written by this process
        except FileNotFoundError:
            return
        self.clear()
        self.update(old)

    def dump_to_disk(self: dict[str, object]) -> None:
        tmp = state.with_suffix(".tmp")
        with tmp.open("wb") as f:
            pickle.dump(dict(self), f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, state)

    resources.Store.try_load_from_disk = try_load_from_disk
    resources.Store.dump_to_disk = dump_to_disk
    resources.store.try_load_from_disk()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    print(sock.getsockname()[1], flush=True)
    web.run_app(server.app, sock=sock, print=None, access_log=None, handle_signals=True)


if __name__ == "__main__":
    sys.exit(main())

"""Running the HTTP server: one process, or several sharing the port.

One worker (the default) is this process. With ``workers = N``, this process forks N
workers that each open the database and listen on the same port with SO_REUSEPORT
(the kernel spreads connections across them), then supervises them: SIGTERM or SIGINT
is passed on, each worker finishes its in-flight requests and closes the database,
and the supervisor exits 0 once they all have. Every server process holds a shared
lock on the data directory (entrypoints.datadir) so that ``restore`` knows it is there.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import shlex
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
from aiohttp import web

from core.domain.pagination import PageRequest
from core.domain.users import Actor, Role, UserStatus
from core.ports.repositories import UserFilter
from core.services.auth import ListUsers
from entrypoints.container import build_container, migrate_store, prepare_data_dir
from entrypoints.datadir import serving
from entrypoints.http.app import create_app
from entrypoints.http.connections import listening
from entrypoints.http.keys import AUTH
from entrypoints.logs import AccessLog
from entrypoints.settings import Settings

log = logging.getLogger("tillbox.server")

#: A worker that dies sooner than this after starting is broken, not unlucky: no restart.
MIN_HEALTHY_SECONDS = 5.0


class ServerError(Exception):
    """The server could not start (port in use, address not available)."""


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (about 15% more requests per second here)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is in the lock file on Linux
        return None
    return uvloop.new_event_loop


def serve(settings: Settings) -> None:
    data_dir = next(prepare_data_dir(settings["data"]["dir"]))
    workers = settings["server"]["workers"]
    host, port = settings["server"]["host"], settings["server"]["port"]
    if port != 0:
        _check_port_free(host, port)
    with _port_held(host, port) as held, serving(data_dir):
        if held is not None:
            server = {**settings["server"], "port": held}
            settings = attrs.evolve(settings, values={**settings.values, "server": server})
        if workers == 1:
            _run_worker(settings, worker=False, reuse_port=held is not None)
        else:
            # Once, before the workers start: each would otherwise wait for the first to finish
            # (a large store's migration takes seconds), or all race for the lock at once.
            migrate_store(settings, data_dir)
            _supervise(settings, workers)


@contextlib.contextmanager
def _port_held(host: str, port: int) -> Iterator[int | None]:
    """Port 0 asks the kernel for a free port: the one it gives is bound here and held until
    the server stops, so that no other program can take it before the workers bind it
    beside this socket (SO_REUSEPORT). Not listening, it is never given a connection. The
    workers' "listening" log line says which port it is. Any other port: None, nothing held."""
    if port != 0:
        yield None
        return
    family, kind, proto, address = _address(host, port)
    with socket.socket(family, kind, proto) as held:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            held.bind(address)
        except OSError as e:
            raise ServerError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        yield int(held.getsockname()[1])


def _address(host: str, port: int) -> tuple[socket.AddressFamily, socket.SocketKind, int, Any]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ServerError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    family, kind, proto, _, address = infos[0]
    return family, kind, proto, address


def _check_port_free(host: str, port: int) -> None:
    """Fail with one clear line before starting anything if another program has the port.
    (With SO_REUSEPORT a second Tillbox could otherwise silently share it.)"""
    family, kind, proto, address = _address(host, port)
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as e:
            raise ServerError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def _run_worker(settings: Settings, *, worker: bool, reuse_port: bool, greet: bool = True) -> None:
    server = settings["server"]
    container = build_container(settings)
    app = create_app(container, access_log=AccessLog() if server["access_log"] else None)
    app.on_startup.append(_freeze_startup_objects)
    host, port = server["host"], server["port"]

    def announce(url: str) -> None:
        # The port bound, not the one asked for: with port 0 the log is how it is found.
        log.info("listening", extra={"fields": {"url": url, "data_dir": str(settings.data_dir), "pid": os.getpid()}})

    async def run() -> None:
        stopping = asyncio.Event()
        _stop_on_signals(asyncio.get_running_loop(), stopping.set, worker=worker)
        # When stopping is set, listening() stops accepting, gives in-flight requests
        # shutdown_grace seconds, then runs cleanup (closing the database) and returns.
        async with listening(
            app, host, port, reuse_port=reuse_port, shutdown_grace=server["shutdown_grace"]
        ) as bound_port:
            announce(f"http://{host}:{bound_port}")
            if greet and sys.stderr.isatty():
                await _greet_the_terminal(app, settings, bound_port)
            await stopping.wait()

    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(run())
    except OSError as e:
        raise ServerError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    log.info("stopped", extra={"fields": {"pid": os.getpid()}})


async def _greet_the_terminal(app: web.Application, settings: Settings, port: int) -> None:
    """What someone who just typed ``tillbox serve`` wants to know, in words, to the
    terminal only: where the API is, where its reference is, and, while the store has no
    active admin, how to make one. (Logs stay JSON for whatever reads them.)"""
    host = settings["server"]["host"]
    # Every address: show one a browser on this machine can open.
    shown = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104
    base = f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"
    lines = [f"Tillbox is serving on {base}" + (" (and every address of this machine)" if shown != host else "")]
    lines.append(f"  API reference: {base}/docs")
    admins = await app[AUTH].list_users(
        ListUsers(
            actor=Actor.operator(),
            page=PageRequest(limit=1),
            filter=UserFilter(role=Role.ADMIN, status=UserStatus.ACTIVE),
        )
    )
    if not admins.items:
        command = f"{_this_program()} users create --email you@example.com --role admin"
        if settings.config_path is not None and settings.config_path != Path("config.toml"):
            command += f" --config {shlex.quote(str(settings.config_path))}"
        lines += ["  There is no admin yet. Create one (it asks for a password) with:", f"    {command}"]
    lines.append("  Press Ctrl-C to stop.")
    print("\n".join(lines), file=sys.stderr, flush=True)


def _this_program() -> str:
    """How to run this same tillbox again from here: ``tillbox`` when that is what the
    PATH finds, else the path it was started by (``.venv/bin/tillbox`` under ``make run``)."""
    started_as = sys.argv[0]
    if started_as.endswith(".py"):  # python -m entrypoints.cli, from a clone
        return f"{shlex.quote(sys.executable)} -m entrypoints.cli"
    on_path = shutil.which("tillbox")
    with contextlib.suppress(OSError):
        if on_path is not None and os.path.samefile(on_path, started_as):
            return "tillbox"
    return shlex.quote(started_as)


def _stop_on_signals(loop: asyncio.AbstractEventLoop, stop: Callable[[], None], *, worker: bool) -> None:
    """Begin a graceful stop on the first signal; the ones after it change nothing (a
    worker gets two SIGTERMs whenever the whole process group is signalled, as systemd
    does, one of them from the supervisor). Workers ignore SIGINT: the supervisor turns
    Ctrl-C into SIGTERM for them."""
    loop.add_signal_handler(signal.SIGTERM, stop)
    if worker:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    else:
        loop.add_signal_handler(signal.SIGINT, stop)


async def _freeze_startup_objects(app: web.Application) -> None:
    """Everything made at startup (modules, the container, the app) lives as long as the
    process; moved out of the collector's sight, full collections stop walking it (they
    held the loop for ~23 ms every few seconds, measured under load)."""
    gc.collect()
    gc.freeze()


def _fork_worker(settings: Settings, *, greet: bool) -> int:
    pid = os.fork()
    if pid == 0:  # the worker
        code = 0
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # until the worker's loop takes it
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            _run_worker(settings, worker=True, reuse_port=True, greet=greet)
        except ServerError as e:
            print(f"tillbox: error: {e}", file=sys.stderr)
            code = 1
        except BaseException:
            log.exception("worker failed")
            code = 1
        finally:
            logging.shutdown()
            os._exit(code)
    return pid


def _supervise(settings: Settings, workers: int) -> None:
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            _signal(pid, signal.SIGTERM)

    children: dict[int, float] = {}
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for n in range(workers):
        children[_fork_worker(settings, greet=n == 0)] = time.monotonic()  # one greeting, not one per worker
    log.info("supervising", extra={"fields": {"workers": sorted(children), "pid": os.getpid()}})

    failed = False
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        started = children.pop(pid, None)
        if started is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        if stopping:
            failed = failed or code != 0
            continue
        if time.monotonic() - started < MIN_HEALTHY_SECONDS:
            log.error("worker exited at start; stopping", extra={"fields": {"pid": pid, "code": code}})
            failed = True
            stop(signal.SIGTERM, None)
            continue
        log.error("worker died; starting another", extra={"fields": {"pid": pid, "code": code}})
        children[_fork_worker(settings, greet=False)] = time.monotonic()
    if failed:
        raise ServerError("a worker failed; see the log above")
    log.info("stopped", extra={"fields": {"pid": os.getpid()}})


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass

"""How long a connection may take to say what it wants, and how many one process holds.

aiohttp closes a connection that waits too long for its next request (its
``keepalive_timeout``, set in app.py through ``handler_args``), but it has no deadline
for a request whose header or body stops arriving, and no bound on open connections: a
client that sends half a header, or promises a body and never sends it, holds a file
descriptor for a minute or forever, and enough such clients exhaust the process's open
files until nothing, ``/healthz`` included, is answered. aiohttp's protocol class is
extended here where it has no knob:

- A read deadline per connection. The first request's header must be complete within
  ``header_timeout`` of connecting, a later one's within ``header_timeout`` of its first
  byte; else the connection is closed (there is no request to answer yet). A body must
  have arrived within ``body_timeout`` of the end of its header; else reading it raises
  ``BodyTimeout`` (the middleware answers 408) and the connection closes after that
  answer. The deadline is a float kept current as data arrives, watched by one timer per
  connection that re-arms itself when it fires early (aiohttp's keep-alive timer works
  the same way), so a request costs no timer of its own.
- A cap on connections per process (``ConnectionGuard``). A connection over the cap
  closes an idle one to make room: first those that never sent a request, then idle
  keep-alive ones, oldest first. Clients reconnect at no cost, and a flood of idle
  sockets cannot keep a health check or a customer out. When every connection is busy
  with a request, the new one is refused (closed at once). The cap is fitted to the
  process's open-file limit at start, so that the process never runs out of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import attrs
from aiohttp import web
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger("tillbox.http")

#: Open files a server process keeps for itself beyond its connections and those the
#: kernel's accept queue may hand over at once: the database and its WAL, the caches,
#: signing keys, calls to Stripe, the standard streams.
OWN_FILES_HEADROOM = 64
#: The listening socket's accept queue: up to this many connections may be accepted
#: before the first of them is seen (and the cap applied).
BACKLOG = 128
#: The warning that the cap is being hit is given at most this often (seconds).
CAP_WARNING_INTERVAL = 60.0


@attrs.frozen
class ConnectionLimits:
    header_timeout: float
    body_timeout: float
    max_connections: int


CONNECTION_LIMITS = web.AppKey("connection_limits", ConnectionLimits)


class BodyTimeout(TimeoutError):
    """A request's body did not arrive within ``server.body_timeout`` seconds. A
    TimeoutError, so that aiohttp's own reading of an unread body stops on it quietly."""

    def __init__(self, seconds: float):
        super().__init__(f"the request body did not arrive within {seconds:g} s")
        self.seconds = seconds


class GuardedRequestHandler(RequestHandler):
    """aiohttp's HTTP/1 protocol with a read deadline and a place under the cap."""

    __slots__ = ("_body", "_guard", "_read_deadline", "_read_timer")

    def __init__(self, manager: web.Server, *, guard: ConnectionGuard, **kwargs: Any):
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._read_deadline = 0.0  # loop time; 0: nothing is awaited from the client
        self._read_timer: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None  # the body still arriving, if any

    @property
    def waiting(self) -> bool:
        """Open, and neither handling a request nor receiving one's body."""
        return (
            self.transport is not None
            and self._body is None
            and not self._request_in_progress
            and not self._messages
            and not self._force_close
        )

    @property
    def has_sent_a_request(self) -> bool:
        return self._request_count > 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._guard.admit(self):
            self._read_by(self._loop.time() + self._guard.header_timeout)
        else:
            self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._guard.release(self)
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        self._body = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        requests = self._request_count
        super().data_received(data)
        if self._request_count != requests:
            # A header is complete; the rest of its body, if any is still to come, is due.
            body = self._messages[-1][1] if self._messages else EMPTY_PAYLOAD
            if body.is_eof():
                self._body = None
                self._read_deadline = 0.0
            else:
                self._body = body
                self._read_by(self._loop.time() + self._guard.body_timeout)
        elif self._body is not None:
            if self._body.is_eof():
                self._body = None
                self._read_deadline = 0.0
        elif data and not self._read_deadline and not self._upgraded:
            # The first bytes of a header that is not complete yet.
            self._read_by(self._loop.time() + self._guard.header_timeout)

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        answered = await super().finish_response(request, resp, start_time)
        if request.content.exception() is not None and not request.content.is_eof():
            # A body that timed out or cannot be decoded: after the answer aiohttp would go
            # on reading the rest, and log a decoding error as unhandled, with a traceback.
            # Nothing more on this connection is worth reading.
            self.force_close()
        return answered

    def _read_by(self, deadline: float) -> None:
        self._read_deadline = deadline
        timer = self._read_timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._read_timer = self._loop.call_at(deadline, self._read_timed_out)

    def _read_timed_out(self) -> None:
        self._read_timer = None
        deadline = self._read_deadline
        if not deadline or self.transport is None:
            return
        if self._loop.time() < deadline:
            self._read_timer = self._loop.call_at(deadline, self._read_timed_out)
            return
        self._read_deadline = 0.0
        body, self._body = self._body, None
        if body is None:
            self.force_close()  # a header that never finished: there is no request to answer
        else:
            self.close()  # no further request on this connection once this one is answered
            body.set_exception(BodyTimeout(self._guard.body_timeout))


class ConnectionGuard:
    """The connections of one server process, under its cap."""

    def __init__(self, limits: ConnectionLimits, *, max_connections: int):
        self.header_timeout = float(limits.header_timeout)
        self.body_timeout = float(limits.body_timeout)
        self.max_connections = max_connections
        self._open: dict[GuardedRequestHandler, None] = {}  # in the order they connected
        self._closed_idle = 0
        self._refused = 0
        self._warned_at: float | None = None

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def admit(self, handler: GuardedRequestHandler) -> bool:
        if len(self._open) >= self.max_connections:
            victim = self._idle_to_close()
            if victim is None:
                self._refused += 1
                self._warn()
                return False
            del self._open[victim]  # its file is closed before the next accept is handled
            victim.force_close()
            self._closed_idle += 1
            self._warn()
        self._open[handler] = None
        return True

    def release(self, handler: GuardedRequestHandler) -> None:
        self._open.pop(handler, None)

    def _idle_to_close(self) -> GuardedRequestHandler | None:
        """The oldest connection that never sent a request, else the oldest idle one."""
        idle = None
        for handler in self._open:
            if handler.waiting:
                if not handler.has_sent_a_request:
                    return handler
                if idle is None:
                    idle = handler
        return idle

    def _warn(self) -> None:
        now = time.monotonic()
        if self._warned_at is not None and now - self._warned_at < CAP_WARNING_INTERVAL:
            return
        self._warned_at = now
        log.warning(
            "at the connection cap: idle connections are closed to make room, new ones refused when none is idle",
            extra={
                "fields": {
                    "max_connections": self.max_connections,
                    "closed_idle": self._closed_idle,
                    "refused": self._refused,
                }
            },
        )
        self._closed_idle = self._refused = 0


class GuardedServer(web.Server):
    """aiohttp's Server, making GuardedRequestHandler protocols (aiohttp has no option
    for the protocol class: its ``__call__`` is the factory the event loop calls)."""

    def __init__(self, handler: Any, *, guard: ConnectionGuard, **kwargs: Any):
        super().__init__(handler, **kwargs)
        self.guard = guard

    def __call__(self) -> GuardedRequestHandler:
        return GuardedRequestHandler(self, loop=self._loop, guard=self.guard, **self._kwargs)


class Runner(web.AppRunner):
    """aiohttp's AppRunner, serving through a GuardedServer with the app's limits."""

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # starts the app: its resources are open now
        limits = self.app[CONNECTION_LIMITS]
        guard = ConnectionGuard(limits, max_connections=fit_open_files(limits.max_connections))
        return GuardedServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            guard=guard,
            **plain._kwargs,
        )


@contextlib.asynccontextmanager
async def listening(
    app: web.Application, host: str, port: int, *, reuse_port: bool = False, shutdown_grace: float = 10.0
) -> AsyncIterator[int]:
    """Serve ``app`` on host:port (0: any free port) while the block runs, and give the
    port bound. On the way out: stop accepting, give in-flight requests ``shutdown_grace``
    seconds, then run the app's cleanup (closing the database). ``tillbox serve`` and the
    tests' servers both run through here."""
    runner = Runner(app, access_log=None, shutdown_timeout=shutdown_grace)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port, backlog=BACKLOG)
        await site.start()
        yield site.port
    finally:
        await runner.cleanup()


def fit_open_files(wanted: int) -> int:
    """The connection cap this process can keep without running out of open files.
    Raises the soft limit as far as needed (and the hard limit allows); where even that is
    too few, the cap is lowered, with a warning that says what to change."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not a Unix: nothing to fit
        return wanted
    in_use = _open_files()
    needed = wanted + BACKLOG + in_use + OWN_FILES_HEADROOM
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return wanted
    fitted = max(1, soft - BACKLOG - in_use - OWN_FILES_HEADROOM)
    log.warning(
        "server.max_connections lowered to fit the open-file limit; raise the limit "
        "(ulimit -n, or LimitNOFILE= in a systemd unit) to keep the setting",
        extra={"fields": {"max_connections": wanted, "lowered_to": fitted, "open_file_limit": soft}},
    )
    return fitted


def _open_files() -> int:
    try:
        return len(os.listdir("/dev/fd"))
    except OSError:  # pragma: no cover - every Unix Tillbox runs on has /dev/fd
        return OWN_FILES_HEADROOM

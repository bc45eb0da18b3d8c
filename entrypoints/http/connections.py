"""How long a connection may take to say what it wants, how much it may say, and how many
one process holds.

aiohttp closes a connection that waits too long for its next request (its
``keepalive_timeout``, set in app.py through ``handler_args``), but it has no deadline
for a request whose header or body stops arriving, no bound on a header as a whole, and no
bound on open connections: a client that sends half a header, or promises a body and never
sends it, holds a file descriptor for a minute or forever, and enough such clients exhaust
the process's open files until nothing, ``/healthz`` included, is answered. aiohttp's
protocol class is extended here where it has no knob:

- A read deadline per connection. The first request's header must be complete within
  ``header_timeout`` of connecting, a later one's within ``header_timeout`` of its first
  byte; else the connection is closed (there is no request to answer yet). A body must
  have arrived within ``body_timeout`` of the end of its header; else reading it raises
  ``BodyTimeout`` (the middleware answers 408) and the connection closes after that
  answer. The deadline is a float kept current as data arrives, watched by one timer per
  connection that re-arms itself when it fires early (aiohttp's keep-alive timer works
  the same way), so a request costs no timer of its own.
- A bound on a request's whole header block (``max_header_bytes``, request line included),
  counted as it arrives: aiohttp bounds each line, and 128 lines of 64 KiB each, never
  finished, held 15 MiB per connection. Over it, the request is answered 431 (414 when the
  request line alone is over) and the connection closed.
- A cap on connections per process (``ConnectionGuard``). A connection over the cap
  closes another to make room: first one that is closing anyway, then those that never
  sent a request, then idle keep-alive ones, oldest first, and when none is idle, the one
  whose request body has been arriving longest (it is answered 408: a client that drips
  bodies must not keep everyone else out). Clients reconnect at no cost, so a flood of
  idle or stalled sockets cannot keep a health check or a customer out. A request being
  handled (its body received) is never closed: when every connection has one, the new one
  is refused (closed at once). The cap is fitted to the process's open-file limit at
  start, so that the process never runs out of them.
- Requests aiohttp answers itself, before the application sees them (one it cannot parse,
  one over its limits, an ``Expect`` it does not meet), are answered in the error envelope
  with the security headers, like every other error, and logged as one debug line: a
  malformed request is the client's fault, not a fault of ours to log with a traceback.
  Every response says ``Server: tillbox`` (aiohttp's default names its version).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import attrs
from aiohttp import web
from aiohttp.compression_utils import HAS_BROTLI, HAS_ZSTD
from aiohttp.http_exceptions import (
    BadHttpMessage,
    BadHttpMethod,
    ContentEncodingError,
    HttpProcessingError,
    LineTooLong,
)
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import RequestHandler, _ErrInfo

from entrypoints.http.envelope import HTTP_CODES, SECURITY_HEADERS, SERVER, envelope, new_request_id

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
#: Header lines one request may have (aiohttp's default is 128; Apache's is 100). Browsers
#: send about 20, and a few proxies add theirs.
MAX_HEADERS = 100
#: Seconds a refused request's connection is kept after its answer, reading and dropping
#: what the client still sends: closing a socket with unread bytes resets the connection,
#: and the client would then lose the answer it was sent.
LINGER_SECONDS = 2.0
#: What a request body may be encoded with (Content-Encoding): what aiohttp decodes here.
CONTENT_CODINGS = ", ".join(["gzip", "deflate", *(["br"] if HAS_BROTLI else []), *(["zstd"] if HAS_ZSTD else [])])


@attrs.frozen
class ConnectionLimits:
    header_timeout: float
    body_timeout: float
    max_connections: int
    max_header_bytes: int = 65536


CONNECTION_LIMITS = web.AppKey("connection_limits", ConnectionLimits)


class BodyTimeout(TimeoutError):
    """A request's body did not arrive within ``server.body_timeout`` seconds, or was still
    arriving when the server needed its connection for another client. A TimeoutError, so
    that aiohttp's own reading of an unread body stops on it quietly."""

    def __init__(self, seconds: float, message: str | None = None):
        self.message = message or f"The request body did not arrive within {seconds:g} s."
        super().__init__(self.message)
        self.seconds = seconds


class HeaderTooLarge(HttpProcessingError):
    """The request's header block is over ``server.max_header_bytes``."""

    code = 431


class RequestLineTooLong(HttpProcessingError):
    """The request line alone is over ``server.max_header_bytes``."""

    code = 414


@attrs.frozen
class ProtocolError:
    """How a request refused before the application saw it is answered."""

    status: int
    code: str
    message: str
    headers: dict[str, str] = attrs.field(factory=dict)
    details: dict[str, Any] = attrs.field(factory=dict)


def protocol_error(
    status: int, error: BaseException | None, limits: ConnectionLimits, method: bytes | None = None
) -> ProtocolError:
    """The answer to a request aiohttp refused (``status`` is what aiohttp would answer),
    by the kind of its error; ``method``: the request's method, when it is known. The
    client's bytes are never echoed: aiohttp's messages quote the offending line, and only
    the description before the quote is kept."""
    if isinstance(error, RequestLineTooLong):
        return ProtocolError(414, "uri_too_long", f"The request line is longer than {limits.max_header_bytes} bytes.")
    if isinstance(error, HeaderTooLarge | LineTooLong) or (
        isinstance(error, BadHttpMessage) and error.message == "Too many headers received"
    ):
        return ProtocolError(
            431,
            "headers_too_large",
            f"The request header is over what this server accepts: {limits.max_header_bytes} bytes "
            f"and {MAX_HEADERS} lines in all.",
        )
    if isinstance(error, ContentEncodingError):
        return ProtocolError(
            415,
            "unsupported_content_encoding",
            f"This server decodes request bodies sent with Content-Encoding {CONTENT_CODINGS}, or none.",
            headers={"Accept-Encoding": CONTENT_CODINGS},
        )
    if isinstance(error, BadHttpMethod) and method is not None and _TOKEN.fullmatch(method):
        # A well-formed method that aiohttp's parser does not know (RFC 9110 section 9.1).
        return ProtocolError(501, "not_implemented", "The request method is not one this server implements.")
    if isinstance(error, HttpProcessingError) and 400 <= (error.code or status) < 500:
        reason = _description(error.message)
        return ProtocolError(
            error.code or status,
            HTTP_CODES.get(error.code or status, "bad_request"),
            "The request is not valid HTTP/1.1.",
            details={"reason": reason} if reason else {},
        )
    if 400 <= status < 500:
        return ProtocolError(status, HTTP_CODES.get(status, "bad_request"), "The request is not valid HTTP/1.1.")
    return ProtocolError(500, "internal_error", "Something went wrong on our side; the request id says where.")


_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 section 5.6.2


def _description(message: str) -> str:
    """aiohttp's description of a parsing error without the line it quotes after it:
    "Missing expected LF after header value", "Invalid method encountered"."""
    lines = message.strip().splitlines()
    first = lines[0] if lines else ""
    for quote in (": b'", ': b"', ": '", ': "', ": bytearray("):
        first = first.split(quote, 1)[0]
    return first.rstrip(":. ")[:120]


class GuardedRequestHandler(RequestHandler):
    """aiohttp's HTTP/1 protocol with a read deadline, a bound on the header block, a place
    under the cap, and the envelope for what aiohttp answers itself."""

    __slots__ = (
        "_body",
        "_body_since",
        "_first_bytes",
        "_gone",
        "_guard",
        "_header_bytes",
        "_line_ended",
        "_lingering",
        "_read_deadline",
        "_read_timer",
        "_refusal",
        "_refused",
    )

    def __init__(self, manager: web.Server, *, guard: ConnectionGuard, **kwargs: Any):
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._read_deadline = 0.0  # loop time; 0: nothing is awaited from the client
        self._read_timer: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None  # the body still arriving, if any
        self._body_since = 0.0  # loop time its header ended
        self._header_bytes = 0  # of the header arriving, so far
        self._line_ended = False  # whether its request line has ended
        self._first_bytes = b""  # of the connection's first request
        self._refused = False  # an error to answer: what else arrives is dropped, then it closes
        self._refusal: web.StreamResponse | None = None  # that answer, once made
        self._lingering = False  # after it: waiting for the client to close
        self._gone: asyncio.Future[None] | None = None  # done when the connection is lost

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

    @property
    def lingering(self) -> bool:
        """Answered an error, and only waiting for the client to close."""
        return self._lingering

    @property
    def body_arriving_since(self) -> float | None:
        """Loop time since when a request's body has been arriving, or None."""
        return self._body_since if self._body is not None else None

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
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not data:
            # aiohttp's resume_reading(): its parser, paused while the handler had not read
            # the body yet, parses what it kept back of the last chunk. Nothing new has
            # arrived, so there is nothing to count; dropped, the rest of the body would
            # wait for bytes the client has already sent, until the body timeout.
            if not self._refused:
                self._receive(data)
            return
        limit = self._guard.max_header_bytes
        while data and not self._refused:
            if self._body is not None or self._upgraded or self._force_close or self._close:
                self._receive(data)
                return
            # A header is arriving: the parser gets no more of it than the limit leaves.
            room = limit - self._header_bytes
            if room <= 0:
                self._refuse_header()
                return
            head, data = data[:room], data[room:]
            if not self._request_count and not self._header_bytes:
                self._first_bytes = head[:32]  # the first request's method, for handle_error
            requests = self._request_count
            self._receive(head)
            if self._request_count != requests:
                # It ended within ``head``. What followed it there (a body, or the start of a
                # pipelined request) is not counted: at most one limit's worth more.
                self._header_bytes = 0
                self._line_ended = False
            else:
                self._header_bytes += len(head)
                self._line_ended = self._line_ended or b"\n" in head  # past the request line
                if data:
                    self._refuse_header(head)
                    return

    def _receive(self, data: bytes) -> None:
        """aiohttp's ``data_received``, keeping the read deadline and what is arriving."""
        requests = self._request_count
        arriving = self._body
        super().data_received(data)
        if self._request_count != requests:
            message, body = self._messages[-1] if self._messages else (None, EMPTY_PAYLOAD)
            if isinstance(message, _ErrInfo):
                self._refused = True  # aiohttp could not parse it; the answer is handle_error's
                self._read_deadline = 0.0
                if arriving is not None:
                    # It broke inside a body (a bad chunk size): the request it belongs to is
                    # answered, as a body that cannot be read (400 malformed_body), and the
                    # error is not answered a second time.
                    self._messages.pop()
                    self._body = None
                    arriving.set_exception(web.RequestPayloadError(message.message))
                return
            # A header is complete; the rest of its body, if any is still to come, is due.
            if body.is_eof():
                self._body = None
                self._read_deadline = 0.0
            else:
                self._body = body
                self._body_since = self._loop.time()
                self._read_by(self._body_since + self._guard.body_timeout)
        elif self._body is not None:
            if self._body.is_eof():
                self._body = None
                self._read_deadline = 0.0
                self._header_bytes = 0  # what follows in this chunk: as in data_received
                self._line_ended = False
        elif data and not self._read_deadline and not self._upgraded:
            # The first bytes of a header that is not complete yet.
            self._read_by(self._loop.time() + self._guard.header_timeout)

    def _refuse_header(self, head: bytes = b"") -> None:
        """Answer a header over the limit (431, or 414 when no line of it has ended), as
        aiohttp answers one it cannot parse: an error message in its queue."""
        limit = self._guard.max_header_bytes
        error: HttpProcessingError = (
            HeaderTooLarge(message=f"header over {limit} bytes")
            if self._line_ended or b"\n" in head
            else RequestLineTooLong(message=f"request line over {limit} bytes")
        )
        self._refused = True
        self._read_deadline = 0.0
        self._request_count += 1
        self._messages.append((_ErrInfo(status=error.code, exc=error, message=error.message), EMPTY_PAYLOAD))
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """What aiohttp answers a request it could not parse (or a failure outside the
        application) with: the envelope, the security headers, one debug line."""
        if request.writer.output_size > 0:  # as aiohttp: an answer has begun, none can follow
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        self._refused = True
        method = self._first_bytes.split(b" ", 1)[0] if self._request_count == 1 and b" " in self._first_bytes else None
        answer = protocol_error(status, exc, self._guard.limits, method)
        rid = new_request_id()
        if answer.code == "internal_error":
            log.error(
                "unhandled error outside the application",
                exc_info=exc,
                extra={"fields": {"request_id": rid, "path": request.path}},
            )
        else:
            log.debug(
                "malformed request",
                extra={
                    "fields": {
                        "request_id": rid,
                        "status": answer.status,
                        "reason": answer.details.get("reason", answer.message),
                        "remote": request.remote,
                    }
                },
            )
        response = envelope(rid, answer.status, answer.code, answer.message, answer.details)
        response.headers.update(answer.headers)
        response.headers.extend(SECURITY_HEADERS)
        response.headers["X-Request-ID"] = rid
        response.headers["Connection"] = "close"  # aiohttp leaves it out when it answers as HTTP/1.0
        response.force_close()
        self._refusal = response
        return response

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        if isinstance(resp, web.HTTPException) and resp.status >= 400:
            # Raised by aiohttp before any middleware ran (an Expect it does not meet).
            resp = self._refusal = self._answer_exception(resp)
        if not resp.prepared:
            resp.headers["Server"] = SERVER
        answered = await super().finish_response(request, resp, start_time)
        if request.content.exception() is not None and not request.content.is_eof():
            # A body that timed out or cannot be decoded: after the answer aiohttp would go
            # on reading the rest, and log a decoding error as unhandled, with a traceback.
            # Nothing more on this connection is worth reading.
            self.force_close()
        if resp is self._refusal:
            await self._linger()
        return answered

    def _answer_exception(self, error: web.HTTPException) -> web.Response:
        rid = new_request_id()
        message = "Only Expect: 100-continue is supported." if error.status == 417 else (error.reason or "")
        response = envelope(rid, error.status, HTTP_CODES.get(error.status, "http_error"), message)
        response.headers.extend(SECURITY_HEADERS)
        response.headers["X-Request-ID"] = rid
        response.force_close()
        return response

    async def _linger(self) -> None:
        """After a refusal's answer: say that nothing more comes (FIN), and drop what the
        client still sends until it closes, for at most LINGER_SECONDS."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        with contextlib.suppress(OSError, RuntimeError, NotImplementedError):
            if transport.can_write_eof():
                transport.write_eof()
        self._refused = self._lingering = True
        self._gone = self._loop.create_future()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._gone), LINGER_SECONDS)

    def evict(self) -> None:
        """Close to make room for another client. A body still arriving is answered 408."""
        body, self._body = self._body, None
        self._read_deadline = 0.0
        if body is None:
            self.force_close()
            return
        self.close()  # no further request on this connection once this one is answered
        body.set_exception(
            BodyTimeout(
                self._guard.body_timeout,
                "The request body was still arriving when the server, at its connection cap, "
                "needed the connection for another client. Send it again, whole.",
            )
        )

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
        self.limits = limits
        self.header_timeout = float(limits.header_timeout)
        self.body_timeout = float(limits.body_timeout)
        self.max_header_bytes = limits.max_header_bytes
        self.max_connections = max_connections
        self._open: dict[GuardedRequestHandler, None] = {}  # in the order they connected
        self._closed = 0
        self._refused = 0
        self._warned_at: float | None = None

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def admit(self, handler: GuardedRequestHandler) -> bool:
        if len(self._open) >= self.max_connections:
            victim = self._to_close()
            if victim is None:
                self._refused += 1
                self._warn()
                return False
            del self._open[victim]  # its file is closed before the next accept is handled
            victim.evict()
            self._closed += 1
            self._warn()
        self._open[handler] = None
        return True

    def release(self, handler: GuardedRequestHandler) -> None:
        self._open.pop(handler, None)

    def _to_close(self) -> GuardedRequestHandler | None:
        """The connection to close for a new one: one closing anyway (lingering after an
        error's answer), else the oldest that
        never sent a request, else the oldest idle one, else the one whose request body has
        been arriving longest. Never one whose request is being handled."""
        never = idle = slowest = None
        for handler in self._open:
            if handler.lingering:
                return handler
            if handler.waiting:
                if not handler.has_sent_a_request:
                    never = never or handler
                else:
                    idle = idle or handler
                continue
            since = handler.body_arriving_since
            if since is not None and (slowest is None or since < slowest[0]):
                slowest = (since, handler)
        return never or idle or (slowest[1] if slowest is not None else None)

    def _warn(self) -> None:
        now = time.monotonic()
        if self._warned_at is not None and now - self._warned_at < CAP_WARNING_INTERVAL:
            return
        self._warned_at = now
        log.warning(
            "at the connection cap: idle connections, else the slowest body, are closed to make room; "
            "new ones are refused when every connection's request is being handled",
            extra={
                "fields": {
                    "max_connections": self.max_connections,
                    "closed": self._closed,
                    "refused": self._refused,
                }
            },
        )
        self._closed = self._refused = 0


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

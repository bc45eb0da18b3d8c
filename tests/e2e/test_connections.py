"""Stalled and abandoned connections, over raw sockets against the real server: a header or
a body that stops arriving, an idle keep-alive connection, more connections than the cap,
a client that hangs up mid-body. Every wait is for a condition, with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from core.services.sessions import SessionGuard
from tests.e2e.conftest import Api, assert_error, count_rows, create_product, place_order, serve
from tests.fakes import FakePaymentGateway, FixedClock
from tests.harness import Server, environment, until_async
from tests.unit.helpers import START

DEADLINE = 15.0  # seconds any awaited close or answer may take, on a busy machine
NEVER = "3600"  # a timeout that cannot fire during a test
WRITTEN = ("users", "audit_log", "idempotency_keys", "refresh_tokens", "outbox")

REGISTER_HEAD = (
    b"POST /api/v1/auth/register HTTP/1.1\r\nHost: tillbox\r\nContent-Type: application/json\r\n"
    b"Idempotency-Key: stalled-1\r\nContent-Length: 100\r\n"
)
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: tillbox\r\n\r\n"


def _port(api: Api) -> int:
    return int(api.base.rsplit(":", 1)[1])


@contextlib.asynccontextmanager
async def _connection(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.transport.abort()


async def _until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    return await asyncio.wait_for(reader.read(), DEADLINE)


async def _response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], Any]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
    return _parse_head(head, await asyncio.wait_for(reader.readexactly(_length(head)), DEADLINE))


def _length(head: bytes) -> int:
    return int(_parse_head(head, b"")[1]["content-length"])


def _parse_head(head: bytes, body: bytes) -> tuple[int, dict[str, str], Any]:
    status_line, *lines = head.decode("latin-1").strip().split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, orjson.loads(body) if body else None


def _split(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return _parse_head(head + b"\r\n\r\n", body)


async def _written(api: Api) -> dict[str, int]:
    return {table: await count_rows(api, table) for table in WRITTEN}


async def test_a_header_that_stops_arriving_is_dropped_after_the_header_timeout(tmp_path: Path) -> None:
    async with serve(
        tmp_path / "data", TILLBOX_SERVER_HEADER_TIMEOUT="1", TILLBOX_SERVER_KEEPALIVE_TIMEOUT=NEVER
    ) as api:
        port = _port(api)
        # Half a header, then nothing: closed without an answer (there is no request yet).
        async with _connection(port) as (reader, writer):
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: tillbox\r\nX-Slow: ")
            assert await _until_closed(reader) == b""
        # Connected, and not a byte sent: the first request's header is due from connecting.
        async with _connection(port) as (reader, _):
            assert await _until_closed(reader) == b""
        # A later request on a kept-alive connection: its header is due from its first byte.
        async with _connection(port) as (reader, writer):
            writer.write(HEALTHZ)
            status, _, body = await _response(reader)
            assert (status, body) == (200, {"status": "ok"})
            writer.write(b"GET /healthz HTTP/1.1\r\nHo")
            assert await _until_closed(reader) == b""


async def test_a_header_dripped_a_byte_at_a_time_is_cut_at_the_header_timeout(tmp_path: Path) -> None:
    """Bytes that keep arriving do not move the deadline: the header is due within
    header_timeout of connecting, however slowly it comes."""
    header = b"GET /healthz HTTP/1.1\r\nHost: tillbox\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n"
    async with (
        serve(tmp_path / "data", TILLBOX_SERVER_HEADER_TIMEOUT="1", TILLBOX_SERVER_KEEPALIVE_TIMEOUT=NEVER) as api,
        _connection(_port(api)) as (reader, writer),
    ):

        async def drip() -> None:  # 200 bytes, one each 50 ms: 10 s at the least
            for byte in header:
                writer.write(bytes([byte]))
                await asyncio.sleep(0.05)

        dripping = asyncio.create_task(drip())
        try:
            assert await _until_closed(reader) == b""  # closed unanswered: there is no request yet
            assert not dripping.done()  # ... and before the header could have ended
        finally:
            dripping.cancel()


async def test_a_body_promised_and_never_sent_gets_408_and_nothing_is_written(tmp_path: Path) -> None:
    async with serve(tmp_path / "data", TILLBOX_SERVER_BODY_TIMEOUT="1", TILLBOX_SERVER_KEEPALIVE_TIMEOUT=NEVER) as api:
        before = await _written(api)
        async with _connection(_port(api)) as (reader, writer):
            writer.write(REGISTER_HEAD + b'\r\n{"email": "slow@example.com", "pass')
            status, headers, body = _split(await _until_closed(reader))  # answered, then closed
        assert_error(status, body, 408, "request_timeout")
        assert headers["connection"] == "close"
        assert body["error"]["message"] == "The request body did not arrive within 1 s."
        assert await _written(api) == before
        # The server goes on serving, and the same request sent whole succeeds.
        status, user, _ = await api.call(
            "POST", "/api/v1/auth/register", json={"email": "slow@example.com", "password": "a long passphrase here"}
        )
        assert (status, user["email"]) == (201, "slow@example.com")


async def test_a_body_that_arrived_before_the_handler_reads_it_is_read_to_its_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handler that awaits something before it reads its body (a database round trip: the
    session check, on PostgreSQL) lets the body pile up, and aiohttp pauses its parser until
    the handler reads; resuming, it parses what it kept back, and reading goes on. That
    resumption was once dropped: the request then waited, until its body timeout (408), for
    bytes the client had sent long before. A compressed body shows it every time: 2 KiB
    arrive at once and inflate to 586 KiB, far more than aiohttp buffers before it pauses."""
    body = gzip.compress(orjson.dumps({"items": [{}] * 200_000}))
    async with serve(tmp_path / "data", TILLBOX_SERVER_BODY_TIMEOUT="10") as api:
        token = await api.token_for("buyer@example.com")
        sent = asyncio.Event()
        check = SessionGuard.check

        async def check_once_the_body_is_sent(guard: SessionGuard, session_id: str) -> None:
            await sent.wait()
            await check(guard, session_id)

        monkeypatch.setattr(SessionGuard, "check", check_once_the_body_is_sent)
        async with _connection(_port(api)) as (reader, writer):
            writer.write(
                b"POST /api/v1/orders HTTP/1.1\r\nHost: tillbox\r\nContent-Type: application/json\r\n"
                b"Content-Encoding: gzip\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s"
                % (token.encode(), len(body), body)
            )
            await asyncio.wait_for(writer.drain(), DEADLINE)
            sent.set()
            status, _, answer = await _response(reader)
        assert_error(status, answer, 422, "validation_failed")  # read whole and checked, not 408
        assert answer["error"]["details"]["fields"]["items"] == "must have at most 100 items"
        assert await count_rows(api, "orders") == 0


async def test_a_chunked_body_that_never_ends_gets_408_and_nothing_is_written(tmp_path: Path) -> None:
    """Chunks that keep arriving do not move the deadline either: the body is due within
    body_timeout of the end of its header."""
    async with (
        serve(tmp_path / "data", TILLBOX_SERVER_BODY_TIMEOUT="1", TILLBOX_SERVER_KEEPALIVE_TIMEOUT=NEVER) as api,
        _connection(_port(api)) as (reader, writer),
    ):
        before = await _written(api)
        writer.write(REGISTER_HEAD.replace(b"Content-Length: 100", b"Transfer-Encoding: chunked") + b"\r\n")

        async def chunks() -> None:
            while True:
                writer.write(b"1\r\n \r\n")
                await asyncio.sleep(0.05)

        sending = asyncio.create_task(chunks())
        try:
            status, headers, body = _split(await _until_closed(reader))
        finally:
            sending.cancel()
        assert_error(status, body, 408, "request_timeout")
        assert headers["connection"] == "close"
        assert await _written(api) == before


async def test_pipelined_requests_are_answered_in_order(api: Api) -> None:
    """Several requests in one write, a body among them: each is answered, in order (the
    header bound counts each request's header apart)."""
    login = b'{"email": "p@example.com", "password": "wrong"}'
    async with _connection(_port(api)) as (reader, writer):
        writer.write(
            HEALTHZ * 2
            + b"POST /api/v1/auth/login HTTP/1.1\r\nHost: tillbox\r\nContent-Type: application/json\r\n"
            + b"Content-Length: %d\r\n\r\n%s" % (len(login), login)
            + HEALTHZ
            + b"GET /nowhere HTTP/1.1\r\nHost: tillbox\r\nConnection: close\r\n\r\n"
        )
        raw = await _until_closed(reader)
    assert [int(status) for status in re.findall(rb"HTTP/1\.1 ([0-9]{3}) ", raw)] == [200, 200, 401, 200, 404]


async def test_an_idle_keep_alive_connection_is_closed_after_its_timeout(tmp_path: Path) -> None:
    async with (
        serve(tmp_path / "data", TILLBOX_SERVER_KEEPALIVE_TIMEOUT="1", TILLBOX_SERVER_HEADER_TIMEOUT=NEVER) as api,
        _connection(_port(api)) as (reader, writer),
    ):
        writer.write(HEALTHZ)
        status, headers, _ = await _response(reader)
        assert status == 200 and headers.get("connection") != "close"  # kept alive
        assert await _until_closed(reader) == b""


async def test_idle_sockets_over_the_cap_make_room_and_healthz_answers(tmp_path: Path) -> None:
    cap, extra = 20, 10
    async with (
        serve(
            tmp_path / "data",
            TILLBOX_SERVER_MAX_CONNECTIONS=str(cap),
            TILLBOX_SERVER_HEADER_TIMEOUT=NEVER,
            TILLBOX_SERVER_KEEPALIVE_TIMEOUT=NEVER,
        ) as api,
        contextlib.AsyncExitStack() as stack,
    ):
        idle = [await stack.enter_async_context(_connection(_port(api))) for _ in range(cap + extra)]
        status, body, _ = await asyncio.wait_for(api.call("GET", "/healthz"), DEADLINE)
        assert (status, body) == (200, {"status": "ok"})
        # Room was made by closing the connections that waited longest without a request:
        # the first extra + 1 (the last one for /healthz's own connection) ...
        for reader, _ in idle[: extra + 1]:
            assert await _until_closed(reader) == b""
        # ... and every other one is still open, and served.
        for reader, writer in idle[extra + 1 :]:
            writer.write(HEALTHZ)
            assert (await _response(reader))[0] == 200


async def test_at_the_cap_the_body_arriving_longest_makes_room_and_is_answered_408(tmp_path: Path) -> None:
    """A client that fills the cap with requests whose bodies drip (a header, then a byte now
    and then) does not keep everyone else out: each newcomer takes the place of the body
    that has been arriving longest, which is answered 408; the others go on."""
    cap = 3
    async with (
        serve(
            tmp_path / "data",
            TILLBOX_SERVER_MAX_CONNECTIONS=str(cap),
            TILLBOX_SERVER_BODY_TIMEOUT=NEVER,
            TILLBOX_SERVER_KEEPALIVE_TIMEOUT=NEVER,
        ) as api,
        contextlib.AsyncExitStack() as stack,
    ):
        before = await _written(api)
        dripping = []
        for _ in range(cap):
            reader, writer = await stack.enter_async_context(_connection(_port(api)))
            writer.write(REGISTER_HEAD + b"Expect: 100-continue\r\n\r\n")
            # 100 Continue: the server has the header and reads the body; one byte of it comes.
            continue_line = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
            assert continue_line.startswith(b"HTTP/1.1 100 Continue")
            writer.write(b"{")
            await writer.drain()
            dripping.append((reader, writer))
        async with _connection(_port(api)) as (reader, writer):
            writer.write(HEALTHZ)
            status, headers, body = await _response(reader)
            assert (status, body, headers["server"]) == (200, {"status": "ok"}, "tillbox")
        # The first body to start arriving made room: answered, then closed.
        status, headers, body = _split(await _until_closed(dripping[0][0]))
        assert_error(status, body, 408, "request_timeout")
        assert headers["connection"] == "close"
        assert body["error"]["message"] == (
            "The request body was still arriving when the server, at its connection cap, "
            "needed the connection for another client. Send it again, whole."
        )
        # The others were left alone: their bodies end, and they are answered.
        for reader, writer in dripping[1:]:
            writer.write(b'"email": "drip@example.com"}'.ljust(99))
            status, _, body = await _response(reader)
            assert_error(status, body, 422, "validation_failed")
            assert body["error"]["details"]["fields"] == {"password": "is required"}
        assert await _written(api) == before


async def test_when_every_connection_has_a_request_being_handled_a_new_one_is_refused_until_one_ends(
    tmp_path: Path,
) -> None:
    """Requests whose bodies have arrived and are being handled (card payments waiting for
    the provider here) are never closed to make room: the newcomer is refused instead."""
    cap = 3
    gateway = FakePaymentGateway(FixedClock(START))
    async with (
        serve(
            tmp_path / "data",
            gateway=gateway,
            TILLBOX_SERVER_MAX_CONNECTIONS=str(cap),
            TILLBOX_SERVER_KEEPALIVE_TIMEOUT=NEVER,
        ) as api,
        contextlib.AsyncExitStack() as stack,
    ):
        staff = await api.token_for("staff@example.com", "staff")
        alice = await api.token_for("alice@example.com")
        mug = await create_product(api, staff, stock=10)
        orders = [await place_order(api, alice, [{"product_id": mug["id"], "quantity": 1}]) for _ in range(cap)]
        gateway.hold()
        payment = b'{"method": "card", "payment_method": "pm_card_visa"}'
        handled = []
        for order in orders:
            reader, writer = await stack.enter_async_context(_connection(_port(api)))
            writer.write(
                b"POST /api/v1/orders/%s/payments HTTP/1.1\r\nHost: tillbox\r\nAuthorization: Bearer %s\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (order["id"].encode(), alice.encode(), len(payment), payment)
            )
            handled.append(reader)

        async def all_at_the_provider() -> bool:
            return gateway.calls["create_card_payment"] == cap

        await until_async(all_at_the_provider, timeout=DEADLINE, what="every payment waiting for the provider")
        async with _connection(_port(api)) as (reader, _):
            assert await _until_closed(reader) == b""  # refused at once: nothing may be closed for it
        gateway.release()
        for reader in handled:
            status, _, body = await _response(reader)
            assert (status, body["status"]) == (201, "succeeded")
        assert await count_rows(api, "payments", "status = 'succeeded'") == cap


@pytest.mark.parametrize("hang_up", ["close", "abort"])
async def test_a_client_hanging_up_mid_body_is_no_error_and_writes_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, hang_up: str
) -> None:
    caplog.set_level(logging.DEBUG)
    async with serve(tmp_path / "data") as api:
        before = await _written(api)
        reader, writer = await asyncio.open_connection("127.0.0.1", _port(api))
        writer.write(REGISTER_HEAD + b"Expect: 100-continue\r\n\r\n")
        # 100 Continue: the server has the header and is about to read the body.
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)).startswith(b"HTTP/1.1 100")
        writer.write(b'{"email": "gone@example.com", "pass')
        await writer.drain()
        writer.close() if hang_up == "close" else writer.transport.abort()
        async with asyncio.timeout(DEADLINE):  # until the server has said something about it
            while not [r for r in caplog.records if r.name == "tillbox.http"]:
                await asyncio.sleep(0.01)
        assert await _written(api) == before
    [hung_up] = [r for r in caplog.records if r.getMessage() == "client hung up"]
    assert hung_up.levelno == logging.DEBUG and hung_up.exc_info is None
    assert getattr(hung_up, "fields", {})["path"] == "/api/v1/auth/register"
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING] == []
    assert not [r for r in caplog.records if "unhandled" in r.getMessage().lower()]


@pytest.mark.parametrize(
    "framing",
    [
        b'Content-Length: 100\r\n\r\n{"email": "gone@example.com", "pa',
        b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"ema\r\n',
    ],
    ids=["content-length", "chunked"],
)
async def test_a_client_hanging_up_mid_body_unannounced_is_no_error_and_writes_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, framing: bytes
) -> None:
    """As above, without Expect: 100-continue: the header and part of the body in one write."""
    caplog.set_level(logging.DEBUG)
    head = REGISTER_HEAD.replace(b"Content-Length: 100\r\n", b"")
    async with serve(tmp_path / "data") as api:
        before = await _written(api)
        async with _connection(_port(api)) as (_, writer):
            writer.write(head + framing)
            await writer.drain()
        async with asyncio.timeout(DEADLINE):  # until the server has said something about it
            while not [r for r in caplog.records if r.getMessage() == "client hung up"]:
                await asyncio.sleep(0.01)
        assert await _written(api) == before
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING] == []


@pytest.fixture
def workers_server(tmp_path: Path) -> Iterator[Server]:
    env = environment({"TILLBOX_SERVER_HEADER_TIMEOUT": "1", "TILLBOX_SERVER_BODY_TIMEOUT": "1"})
    server = Server(tmp_path, "--workers", "2", env=env)
    yield server
    server.kill()


async def test_the_limits_hold_in_every_worker_process(workers_server: Server) -> None:
    port = workers_server.port
    async with contextlib.AsyncExitStack() as stack:
        # The kernel spreads connections over both workers (20 all on one: 1 in 500,000).
        stalled = [await stack.enter_async_context(_connection(port)) for _ in range(20)]
        for _, writer in stalled:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: tillbox\r\n")
        for reader, _ in stalled:
            assert await _until_closed(reader) == b""
        reader, writer = await stack.enter_async_context(_connection(port))
        writer.write(REGISTER_HEAD + b"\r\n{")
        status, _, body = _split(await _until_closed(reader))
        assert_error(status, body, 408, "request_timeout")
    assert workers_server.stop() == 0


async def test_a_body_that_cannot_be_decoded_is_400_without_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with serve(tmp_path / "data") as api:
        before = await _written(api)
        async with _connection(_port(api)) as (reader, writer):
            writer.write(
                b"POST /api/v1/auth/register HTTP/1.1\r\nHost: tillbox\r\nContent-Type: application/json\r\n"
                b"Content-Encoding: gzip\r\nContent-Length: 12\r\n\r\nnot gzip, no"
            )
            status, headers, body = _split(await _until_closed(reader))  # answered, then closed
        assert_error(status, body, 400, "malformed_body")
        assert headers["connection"] == "close"
        assert await _written(api) == before
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING] == []

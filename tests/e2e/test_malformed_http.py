"""Requests that never reach the application: aiohttp cannot parse them, they are over the
header limits, or they expect what the server does not do. Each is answered like every
other error (the envelope, the security headers, ``Server: tillbox``, the connection
closed), logged as one debug line without a traceback, and changes nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.compression_utils import HAS_BROTLI, HAS_ZSTD

from entrypoints.http.envelope import SECURITY_HEADERS
from tests.e2e.conftest import (
    RAW_DEADLINE,
    Api,
    assert_error,
    count_rows,
    raw_connection,
    raw_exchange,
    serve,
    split_response,
)
from tests.logcapture import CapturedLog, captured_log

HOST = b"Host: shop\r\n"
LOGIN = b"POST /api/v1/auth/login HTTP/1.1\r\n" + HOST + b"Content-Type: application/json\r\n"
LIMIT = 65536  # server.max_header_bytes by default
PAD = b"a" * 60_000


@pytest.fixture
def log() -> Iterator[CapturedLog]:
    with captured_log("debug") as captured:
        yield captured


def _entries(log: CapturedLog) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.text().splitlines()]


def _assert_answered_like_any_error(status: int, headers: dict[str, str], body: Any, expected: int, code: str) -> None:
    assert headers["content-type"].startswith("application/json"), (status, headers, body)
    assert_error(status, body, expected, code)
    for name, value in SECURITY_HEADERS.items():
        assert headers[name.lower()] == value
    assert headers["server"] == "tillbox"
    assert headers["connection"] == "close"
    assert headers["x-request-id"] == body["error"]["request_id"]


# What aiohttp's parser refuses, with what it is answered and the reason given.
PARSE_ERRORS = {
    "bare-cr-in-a-header": (
        b"GET /healthz HTTP/1.1\r\n" + HOST + b"X-A: a\rb\r\n\r\n",
        400,
        "bad_request",
        "Missing expected LF after header value",
    ),
    "bare-cr-in-the-request-line": (b"GET /healthz?a=b\r HTTP/1.1\r\n" + HOST + b"\r\n", 400, "bad_request", None),
    "bad-method": (b"G@T /healthz HTTP/1.1\r\n" + HOST + b"\r\n", 400, "bad_request", "Invalid method encountered"),
    "unknown-method": (b"BREW /healthz HTTP/1.1\r\n" + HOST + b"\r\n", 501, "not_implemented", None),
    "content-length-and-chunked": (
        LOGIN + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        "bad_request",
        "Transfer-Encoding can't be present with Content-Length",
    ),
    "two-content-lengths": (
        LOGIN + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        400,
        "bad_request",
        "Duplicate Content-Length",
    ),
    "bad-chunk-size-with-the-header": (
        LOGIN + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        400,
        "bad_request",
        "Invalid character in chunk size",
    ),
    "header-without-colon": (
        b"GET /healthz HTTP/1.1\r\n" + HOST + b"X-A b\r\n\r\n",
        400,
        "bad_request",
        "Invalid header token",
    ),
    "request-line-over-the-limit": (
        b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n" + HOST + b"\r\n",
        414,
        "uri_too_long",
        None,
    ),
    "one-header-line-over-the-limit": (
        b"GET /healthz HTTP/1.1\r\n" + HOST + b"X-Pad: " + b"a" * 70_000 + b"\r\n\r\n",
        431,
        "headers_too_large",
        None,
    ),
    "header-lines-over-the-limit-together": (
        b"GET /healthz HTTP/1.1\r\n" + HOST + b"".join(b"X-Pad-%d: %s\r\n" % (n, PAD) for n in range(20)) + b"\r\n",
        431,
        "headers_too_large",
        None,
    ),
    "too-many-header-lines": (
        b"GET /healthz HTTP/1.1\r\n" + HOST + b"".join(b"X-%d: a\r\n" % n for n in range(101)) + b"\r\n",
        431,
        "headers_too_large",
        None,
    ),
}


@pytest.mark.parametrize(("request_bytes", "status", "code", "reason"), PARSE_ERRORS.values(), ids=PARSE_ERRORS.keys())
async def test_a_request_aiohttp_refuses_is_answered_in_the_envelope_and_logged_in_one_debug_line(
    tmp_path: Path, log: CapturedLog, request_bytes: bytes, status: int, code: str, reason: str | None
) -> None:
    async with serve(tmp_path / "data") as api:
        answer = await raw_exchange(api, request_bytes)
        assert await count_rows(api, "audit_log") == 0
    got, headers, body = split_response(answer)
    _assert_answered_like_any_error(got, headers, body, status, code)
    if reason is not None:
        assert body["error"]["details"] == {"reason": reason}
    assert b"a" * 100 not in answer  # nothing the client sent is echoed
    (entry,) = [e for e in _entries(log) if e["logger"].startswith(("tillbox", "aiohttp"))]
    assert (entry["logger"], entry["level"], entry["message"]) == ("tillbox.http", "debug", "malformed request")
    assert (entry["status"], entry["request_id"]) == (status, body["error"]["request_id"])
    assert "traceback" not in entry and len(json.dumps(entry)) < 400


async def test_the_header_limit_is_a_setting_and_counts_the_request_line_too(tmp_path: Path) -> None:
    async with serve(tmp_path / "data", TILLBOX_SERVER_MAX_HEADER_BYTES="8192") as api:
        request = b"GET /healthz HTTP/1.1\r\n" + HOST + b"Connection: close\r\nX-Pad: %s\r\n\r\n"
        # Under 8 KiB in all: answered.
        fits = request % (b"a" * (8192 - len(request % b"") - 100))
        status, _, body = split_response(await raw_exchange(api, fits))
        assert (status, body) == (200, {"status": "ok"})
        # Over it by a byte: each line is short, the block is not.
        over = b"GET /healthz HTTP/1.1\r\n" + HOST + b"".join(b"X-Pad-%d: %s\r\n" % (n, b"a" * 900) for n in range(9))
        status, headers, body = split_response(await raw_exchange(api, over + b"\r\n"))
        _assert_answered_like_any_error(status, headers, body, 431, "headers_too_large")
        assert body["error"]["message"] == (
            "The request header is over what this server accepts: 8192 bytes and 100 lines in all."
        )
        # A header block that never ends is refused as soon as it is over, not when it ends.
        unfinished = b"GET /healthz HTTP/1.1\r\n" + HOST + b"X-Pad: " + b"a" * 10_000
        status, headers, body = split_response(await raw_exchange(api, unfinished))
        _assert_answered_like_any_error(status, headers, body, 431, "headers_too_large")


async def test_a_pipelined_request_after_a_body_is_bounded_too(api: Api) -> None:
    """The count starts again where a body ends, not only where a header does."""
    post = LOGIN + b"Content-Length: 2\r\n\r\n{}"
    second = b"GET /healthz HTTP/1.1\r\n" + HOST + b"".join(b"X-Pad-%d: %s\r\n" % (n, PAD) for n in range(3)) + b"\r\n"
    raw = await raw_exchange(api, post + second)
    first, _, rest = raw.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 422 ")
    assert b" 431 Request Header Fields Too Large\r\n" in rest and b" 200 OK" not in rest


async def test_a_broken_chunk_in_a_body_being_read_is_answered_once_as_a_body_that_cannot_be_read(
    tmp_path: Path, log: CapturedLog
) -> None:
    async with serve(tmp_path / "data") as api, raw_connection(api) as (reader, writer):
        writer.write(LOGIN + b"Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n")
        # 100 Continue: the request is being handled and reads its body; a broken chunk comes.
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), RAW_DEADLINE)).startswith(b"HTTP/1.1 100")
        writer.write(b"zz\r\n{}\r\n0\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), RAW_DEADLINE)
        assert await count_rows(api, "audit_log") == 0
    assert answer.count(b"HTTP/1.") == 1
    status, headers, body = split_response(answer)
    _assert_answered_like_any_error(status, headers, body, 400, "malformed_body")
    assert not [e for e in _entries(log) if e["level"] in ("warning", "error", "critical") or "traceback" in e]


async def test_a_content_encoding_the_server_cannot_decode_is_415_naming_those_it_can(
    tmp_path: Path, log: CapturedLog
) -> None:
    unsupported = [coding for coding, there in (("zstd", HAS_ZSTD), ("br", HAS_BROTLI)) if not there]
    assert unsupported, "this environment decodes every coding aiohttp knows: nothing to refuse"
    async with serve(tmp_path / "data") as api:
        for coding in unsupported:
            request = LOGIN + b"Content-Encoding: %s\r\nContent-Length: 2\r\n\r\n{}" % coding.encode()
            status, headers, body = split_response(await raw_exchange(api, request))
            _assert_answered_like_any_error(status, headers, body, 415, "unsupported_content_encoding")
            assert headers["accept-encoding"] == "gzip, deflate"
        assert await count_rows(api, "audit_log") == 0
    assert "Please install" not in log.raw.getvalue()  # aiohttp's advice is for whoever installs it
    assert not [e for e in _entries(log) if e["level"] in ("warning", "error", "critical") or "traceback" in e]


@pytest.mark.parametrize("path", [b"/api/v1/auth/login", b"/nowhere"])
async def test_an_expectation_other_than_100_continue_is_417_in_the_envelope(
    tmp_path: Path, log: CapturedLog, path: bytes
) -> None:
    async with serve(tmp_path / "data") as api:
        request = (
            b"POST " + path + b" HTTP/1.1\r\n" + HOST + b"Content-Type: application/json\r\n"
            b"Expect: 200-ok\r\nContent-Length: 2\r\n\r\n{}"
        )
        status, headers, body = split_response(await raw_exchange(api, request))
        assert await count_rows(api, "audit_log") == 0
    _assert_answered_like_any_error(status, headers, body, 417, "expectation_failed")
    assert body["error"]["message"] == "Only Expect: 100-continue is supported."
    assert not [e for e in _entries(log) if e["level"] in ("warning", "error", "critical") or "traceback" in e]


async def test_a_client_still_sending_its_refused_header_gets_the_answer_not_a_reset(api: Api) -> None:
    """The server stops reading the header at the limit; a client pushing 2 MB more must
    still read the 431: closing with its bytes unread would reset the connection."""
    request = b"GET /healthz HTTP/1.1\r\n" + HOST + b"X-Pad: " + b"a" * 2_000_000 + b"\r\n\r\n"
    status, headers, body = split_response(await raw_exchange(api, request))
    _assert_answered_like_any_error(status, headers, body, 431, "headers_too_large")

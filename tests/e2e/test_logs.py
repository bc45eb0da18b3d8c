"""Nothing secret reaches the log, on the paths that put secrets in it: aiohttp quoting a
malformed header line, stripe-python's debug lines, an exception's text. The server runs on
a real port with the log configured as ``tillbox serve`` configures it."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from core.domain.money import Money
from core.ports.payments import ProviderPayment
from entrypoints.logs import AccessLog
from tests.e2e.conftest import (
    assert_error,
    create_product,
    place_order,
    raw_exchange,
    serve,
    split_response,
    stripe_settings,
)
from tests.fakes import FakePaymentGateway, FixedClock
from tests.harness import until_async
from tests.localstripe.fixtures import (
    SECRET_KEY,
    THREE_D_SECURE_CARD,
    WEBHOOK_SECRET,
    create_card_payment_method,
)
from tests.logcapture import CapturedLog, captured_log
from tests.unit.helpers import START


@pytest.fixture
def log() -> Iterator[CapturedLog]:
    with captured_log("debug") as captured:
        yield captured


def _entries(log: CapturedLog) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.text().splitlines()]


@pytest.mark.parametrize(
    "line",
    [
        b"Authorization: Bearer %(token)s\rX-Other: y",
        b"authorization: bearer %(token)s\r",
        b"Cookie: session=%(token)s\rX-Other: y",
        b"X-Forwarded-Token: %(token)s\r",  # no telling name: the JWT is recognised by its form
    ],
)
async def test_a_bare_cr_in_a_header_line_logs_no_token(tmp_path: Path, log: CapturedLog, line: bytes) -> None:
    """aiohttp quotes the line it cannot parse in its error, token included; the server
    answers such a request itself (entrypoints/http/connections.py) and logs one debug line
    with aiohttp's description of the fault, not the line. (aiohttp's own record used to be
    an error with the line in its traceback, redacted: tests/unit/test_redaction.py keeps
    that form redacted, for any other record that quotes one.)"""
    async with serve(tmp_path / "data") as api:
        token = await api.token_for("alice@example.com")
        header = line % {b"token": token.encode()}
        answer = await raw_exchange(api, b"GET /api/v1/users/me HTTP/1.1\r\nHost: shop\r\n" + header + b"\r\n\r\n")
    status, _, body = split_response(answer)
    assert_error(status, body, 400, "bad_request")
    assert body["error"]["details"] == {"reason": "Missing expected LF after header value"}
    (entry,) = [e for e in _entries(log) if e["logger"].startswith(("aiohttp", "tillbox.http"))]
    assert (entry["logger"], entry["level"], entry["message"]) == ("tillbox.http", "debug", "malformed request")
    assert entry["reason"] == "Missing expected LF after header value"
    for part in (token, *token.split(".")):
        assert part not in log.raw.getvalue()  # not even before redaction
        assert part.encode() not in answer


async def test_a_bare_cr_in_the_request_line_logs_no_secret_from_its_query(tmp_path: Path, log: CapturedLog) -> None:
    secret = "Qm9yaW5nLXNlY3JldC10b2tlbg"
    async with serve(tmp_path / "data") as api:
        answer = await raw_exchange(
            api, b"GET /api/v1/products?access_token=" + secret.encode() + b"\r HTTP/1.1\r\nHost: shop\r\n\r\n"
        )
    status, _, body = split_response(answer)
    assert_error(status, body, 400, "bad_request")
    (entry,) = [e for e in _entries(log) if e["logger"].startswith(("aiohttp", "tillbox.http"))]
    assert (entry["level"], entry["message"]) == ("debug", "malformed request")
    assert secret not in log.raw.getvalue()
    assert secret.encode() not in answer


async def test_stripe_debug_lines_carry_no_client_secret_and_no_key(
    tmp_path: Path, log: CapturedLog, localstripe_url: str
) -> None:
    async with serve(tmp_path / "data", TILLBOX_LOG_LEVEL="debug", **stripe_settings(localstripe_url)) as api:
        staff = await api.token_for("staff@example.com", "staff")
        alice = await api.token_for("alice@example.com")
        mug = await create_product(api, staff, sku="MUG-1", name="Blue mug", price=1250, stock=20)
        client_secrets = []
        for payment_method in ("pm_card_visa", await create_card_payment_method(localstripe_url, THREE_D_SECURE_CARD)):
            order = await place_order(api, alice, [{"product_id": mug["id"], "quantity": 1}])
            status, payment, _ = await api.call(
                "POST",
                f"/api/v1/orders/{order['id']}/payments",
                json={"method": "card", "payment_method": payment_method},
                token=alice,
            )
            assert status == 201, payment
            client_secrets.append(await _client_secret(localstripe_url, payment["provider_reference"]))
        assert payment["client_secret"] == client_secrets[-1]  # the 3-D Secure one goes to the customer
    stripe_lines = [e["message"] for e in _entries(log) if e["logger"] == "stripe"]
    assert any("message='API response body'" in m for m in stripe_lines)
    assert sum('"client_secret": "[REDACTED]"' in m for m in stripe_lines) == 2  # one per payment
    for secret in client_secrets:
        assert secret in log.raw.getvalue()  # stripe-python logged each
        assert secret not in log.text()
    for key in (SECRET_KEY, WEBHOOK_SECRET):
        assert key not in log.text()


async def _client_secret(localstripe_url: str, reference: str) -> str:
    """The PaymentIntent's client secret, as localstripe holds it."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{localstripe_url}/v1/payment_intents/{reference}", headers={"Authorization": f"Bearer {SECRET_KEY}"}
        ) as response,
    ):
        assert response.status == 200
        secret: str = (await response.json())["client_secret"]
    assert secret.startswith(f"{reference}_secret_")
    return secret


PASSWORD_IN_ERROR = "my own password 1234"


class LeakyGateway(FakePaymentGateway):
    """A provider library that fails with the request in its exception, as HTTP clients do."""

    async def create_card_payment(
        self, *, amount: Money, payment_method: str, idempotency_key: str, metadata: dict[str, str]
    ) -> ProviderPayment:
        try:
            raise ConnectionError(f'sent {{"password": "{PASSWORD_IN_ERROR}", "card": "4242 4242 4242 4242"}}')
        except ConnectionError as cause:
            raise RuntimeError(f"call failed: Authorization: Bearer {self.token} ({SECRET_KEY})") from cause

    token = ""


async def test_an_unhandled_exception_is_logged_with_its_traceback_redacted(tmp_path: Path, log: CapturedLog) -> None:
    gateway = LeakyGateway(FixedClock(START))
    async with serve(tmp_path / "data", gateway=gateway) as api:
        staff = await api.token_for("staff@example.com", "staff")
        alice = await api.token_for("alice@example.com")
        gateway.token = alice
        mug = await create_product(api, staff, sku="MUG-1", name="Blue mug", price=1250, stock=20)
        order = await place_order(api, alice, [{"product_id": mug["id"], "quantity": 1}])
        status, body, _ = await api.call(
            "POST",
            f"/api/v1/orders/{order['id']}/payments",
            json={"method": "card", "payment_method": "pm_card_visa"},
            token=alice,
        )
    assert_error(status, body, 500, "internal_error")
    (error,) = [e for e in _entries(log) if e["message"] == "unhandled error"]
    assert error["request_id"] == body["error"]["request_id"]
    traceback = error["traceback"]
    assert 'ConnectionError: sent {"password": "[REDACTED]", "card": "[REDACTED]"}' in traceback
    assert "The above exception was the direct cause of the following exception" in traceback
    assert "RuntimeError: call failed: Authorization: [REDACTED]" in traceback
    for secret in (PASSWORD_IN_ERROR, alice, "4242 4242 4242 4242", SECRET_KEY):
        assert secret in log.raw.getvalue()
        assert secret not in log.text()


async def test_a_long_hostile_path_reaches_the_access_log_redacted(tmp_path: Path) -> None:
    """The access log redacts each path on the event loop: the worst 60 KB path (a word of
    "passwd", which cost 31 s of loop CPU at 64 KiB while redaction was quadratic) is logged
    redacted, and the server answers meanwhile. Its cost is measured, linear, in
    tests/unit/test_redaction.py."""
    stream = io.BytesIO()
    path = "/" + "passwd" * 10_000 + "/password=" + PASSWORD_IN_ERROR.replace(" ", "-")
    async with serve(tmp_path / "data", access_log=AccessLog(stream=stream)) as api:
        status, body, _ = await api.call("GET", path)
        assert_error(status, body, 404, "not_found")

        async def logged() -> list[dict[str, Any]]:
            return [json.loads(line) for line in stream.getvalue().splitlines()]

        (line,) = await until_async(logged, timeout=10, what="the access log line")
        status, body, _ = await api.call("GET", "/healthz")
        assert (status, body) == (200, {"status": "ok"})
    assert (line["status"], line["path"]) == (404, "/" + "passwd" * 10_000 + "/password=[REDACTED]")

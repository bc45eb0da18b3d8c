"""Fixtures for tests against localstripe. A test module imports the ones it uses, by their
function names (``*_fixture``, so that a test's parameter does not shadow the import):

    from tests.localstripe.fixtures import localstripe_url_fixture  # noqa: F401 - a fixture

``localstripe_url``: one localstripe process for the whole run (started by the first module
that asks), bound to 127.0.0.1 on a free port, its state in a private temporary directory,
killed at the end. If it cannot start, the tests that need it fail: localstripe is in the
lock file, so a missing or broken one is a broken environment, not a reason to skip.

What localstripe models, as measured with localstripe 1.15.10:

- payment methods: ``pm_card_visa`` (succeeds), ``pm_card_chargeCustomerFail`` (declined when
  charged: 402 ``card_declined``; the error names the charge, not the PaymentIntent),
  ``pm_card_visa_chargeDeclined`` only fails when *attached* to a customer (charging it
  succeeds). No ready-made 3-D Secure id: create a card payment method with
  ``THREE_D_SECURE_CARD`` (``create_card_payment_method``) and confirmation answers
  ``requires_action`` with ``next_action.type == "use_stripe_sdk"``.
- PaymentIntent create accepts ``payment_method_types`` but refuses
  ``automatic_payment_methods`` and ``return_url`` (400 "Unexpected ...").
- webhooks: ``POST /_config/webhooks/{id}`` with ``url``, ``secret`` and optional
  ``events[]`` registers an endpoint (in memory, never removed; re-registering an id replaces
  it); events are signed like Stripe's and sent about one second after they happen. It sends
  ``payment_intent.succeeded`` and ``payment_intent.payment_failed``, never ``charge.refunded``.
- not modelled: Idempotency-Key (a replayed create makes a second PaymentIntent), refund
  limits (refunds may exceed the charge), refund statuses other than succeeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any, BinaryIO, NoReturn

import aiohttp
import pytest
import tenacity
from aiohttp import web

from adapters.payments.stripe import StripePaymentGateway
from tests.fakes import FixedClock

SERVE = pathlib.Path(__file__).with_name("serve.py")
STARTUP_SECONDS = 20.0

SECRET_KEY = "sk_test_tillbox"
WEBHOOK_SECRET = "whsec_tillbox_tests"
THREE_D_SECURE_CARD = "4000002500003155"
WEBHOOK_ENDPOINT_ID = "tillbox-tests"


class LocalStripe:
    """One localstripe subprocess."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="tillbox-localstripe-")
        self.process: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None
        self.url = ""

    def start(self) -> str:
        state = pathlib.Path(self._dir.name) / "state.pickle"
        self._log = log = open(pathlib.Path(self._dir.name) / "localstripe.log", "wb")  # noqa: SIM115 - lives with the process
        self.process = subprocess.Popen(
            [sys.executable, str(SERVE), "--host", "127.0.0.1", "--port", "0", "--state", str(state)],
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,  # its own process group: we stop exactly what we started
        )
        port = self._read_port()
        self.url = f"http://127.0.0.1:{port}"
        self._wait_until_serving()
        return self.url

    def _read_port(self) -> int:
        assert self.process is not None and self.process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ)
        ready = selector.select(timeout=STARTUP_SECONDS)
        line = self.process.stdout.readline() if ready else b""
        if not line.strip().isdigit():
            self._fail("localstripe did not start")
        return int(line)

    def _fail(self, what: str) -> NoReturn:
        log = self.log_text()[-2000:]
        self.stop()
        raise RuntimeError(f"{what}; its output:\n{log}")

    def _wait_until_serving(self) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            try:
                req = urllib.request.Request(
                    self.url + "/v1/balance", headers={"Authorization": f"Bearer {SECRET_KEY}"}
                )
                with urllib.request.urlopen(req, timeout=2):
                    return
            except OSError:
                if time.monotonic() > deadline or (self.process and self.process.poll() is not None):
                    self._fail("localstripe is not answering")
                time.sleep(0.05)

    def log_text(self) -> str:
        path = pathlib.Path(self._dir.name) / "localstripe.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()
        if self._log is not None:
            self._log.close()
        self._dir.cleanup()


# One process per run, however many modules import the fixture (pytest makes one fixture
# definition per importing module; they share this).
_server: LocalStripe | None = None
_users = 0


@pytest.fixture(scope="session", name="localstripe_url")
def localstripe_url_fixture() -> Iterator[str]:
    global _server, _users
    if _server is None:
        server = LocalStripe()
        problem = None
        try:
            server.start()
        except RuntimeError as exc:
            problem = str(exc)
        if problem is not None:
            pytest.fail(problem, pytrace=False)
        _server = server
    _users += 1
    try:
        yield _server.url
    finally:
        _users -= 1
        if _users == 0:
            _server.stop()
            _server = None


async def create_card_payment_method(api_base: str, number: str) -> str:
    """A card PaymentMethod made from a raw test number (localstripe takes raw numbers)."""
    form = {
        "type": "card",
        "card[number]": number,
        "card[exp_month]": "12",
        "card[exp_year]": "2030",
        "card[cvc]": "123",
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{api_base}/v1/payment_methods", data=form, headers={"Authorization": f"Bearer {SECRET_KEY}"}
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return str(body["id"])


async def authenticate_payment(api_base: str, reference: str, client_secret: str, *, success: bool) -> None:
    """What the customer's browser does after 3-D Secure (localstripe's private endpoint)."""
    form = {"client_secret": client_secret, "success": "true" if success else "false"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{api_base}/v1/payment_intents/{reference}/_authenticate",
            data=form,
            headers={"Authorization": f"Bearer {SECRET_KEY}"},
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()


class WebhookReceiver:
    """An HTTP endpoint that keeps what it is sent: ``(body, Stripe-Signature header)``."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, str | None]] = asyncio.Queue()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        await self.received.put((await request.read(), request.headers.get("Stripe-Signature")))
        return web.Response(status=200)

    async def next_event(self, event_type: str, reference: str, timeout: float = 10.0) -> tuple[bytes, str | None]:
        """The first delivery of ``event_type`` about ``reference`` (others are dropped)."""
        async with asyncio.timeout(timeout):
            while True:
                body, signature = await self.received.get()
                event = json.loads(body)
                if event["type"] == event_type and event["data"]["object"].get("id") == reference:
                    return body, signature


@pytest.fixture(name="webhook_receiver")
async def webhook_receiver_fixture(localstripe_url: str) -> AsyncIterator[WebhookReceiver]:
    """A receiver on a free port, registered with localstripe for the payment events."""
    receiver = WebhookReceiver()
    app = web.Application()
    app.router.add_post("/webhooks/stripe", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    receiver.url = f"http://127.0.0.1:{port}/webhooks/stripe"
    form = [
        ("url", receiver.url),
        ("secret", WEBHOOK_SECRET),
        ("events[]", "payment_intent.succeeded"),
        ("events[]", "payment_intent.payment_failed"),
    ]
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{localstripe_url}/_config/webhooks/{WEBHOOK_ENDPOINT_ID}", data=form) as resp,
    ):
        assert resp.status == 200, await resp.text()
    try:
        yield receiver
    finally:
        with contextlib.suppress(Exception):
            await runner.cleanup()


def make_gateway(api_base: str, **overrides: Any) -> StripePaymentGateway:
    """A StripePaymentGateway for tests: no backoff between attempts, a fixed clock."""
    settings: dict[str, Any] = {
        "secret_key": SECRET_KEY,
        "api_base": api_base,
        "webhook_secret": WEBHOOK_SECRET,
        "currency": "USD",
        "clock": FixedClock(),
        "wait": tenacity.wait_none(),
    }
    settings.update(overrides)
    return StripePaymentGateway(**settings)


@pytest.fixture(name="localstripe_gateway")
async def localstripe_gateway_fixture(localstripe_url: str) -> AsyncIterator[StripePaymentGateway]:
    gateway = make_gateway(localstripe_url)
    try:
        yield gateway
    finally:
        await gateway.close()

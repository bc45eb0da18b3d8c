"""Retries and the circuit breaker, against a small HTTP server that answers what each test
scripts (500, 429, a reset connection, Stripe-Should-Retry, a slow answer) and records every
request it receives. No backoff (tenacity.wait_none) and a fixed clock: milliseconds."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import tenacity
from aiohttp import web

from adapters.payments.breaker import BreakerState
from adapters.payments.stripe import StripePaymentGateway
from core.domain.errors import Invalid, PaymentProviderUnavailable, Unavailable
from core.domain.money import Money
from core.ports.payments import ProviderPaymentStatus
from tests.fakes import FixedClock
from tests.localstripe.fixtures import make_gateway

INTENT = {
    "id": "pi_scripted",
    "object": "payment_intent",
    "status": "succeeded",
    "amount": 1000,
    "currency": "usd",
    "client_secret": "pi_scripted_secret_x",
    "next_action": None,
    "last_payment_error": None,
    "metadata": {},
}
REFUND = {
    "id": "re_scripted",
    "object": "refund",
    "status": "succeeded",
    "amount": 300,
    "currency": "usd",
    "payment_intent": "pi_scripted",
}


@attrs.frozen
class Answer:
    status: int = 200
    body: Any = attrs.Factory(lambda: INTENT)
    headers: dict[str, str] = attrs.Factory(dict)
    reset: bool = False  # drop the connection instead of answering
    delay: float = 0.0


OK = Answer()
ERROR = {"error": {"type": "api_error", "message": "Something went wrong on Stripe's end."}}
SERVER_ERROR = Answer(500, ERROR)
RATE_LIMITED = Answer(429, {"error": {"type": "invalid_request_error", "code": "rate_limit", "message": "Too fast"}})
RESET = Answer(reset=True)


@attrs.define
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: str


class ScriptedStripe:
    """Answers with ``script`` in order, then repeats its last answer."""

    def __init__(self) -> None:
        self.script: list[Answer] = [OK]
        self.requests: list[Request] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(Request(request.method, request.path, dict(request.headers), await request.text()))
        answer = self.script[min(len(self.requests), len(self.script)) - 1]
        if answer.delay:
            await asyncio.sleep(answer.delay)
        if answer.reset:
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        text = answer.body if isinstance(answer.body, str) else json.dumps(answer.body)  # a str is sent as it is
        return web.Response(status=answer.status, text=text, content_type="application/json", headers=answer.headers)

    def keys(self) -> list[str | None]:
        return [r.headers.get("Idempotency-Key") for r in self.requests]


@pytest.fixture
async def server() -> AsyncIterator[ScriptedStripe]:
    scripted = ScriptedStripe()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", scripted.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    scripted.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield scripted
    finally:
        await runner.cleanup()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
async def gateway(server: ScriptedStripe, clock: FixedClock) -> AsyncIterator[StripePaymentGateway]:
    gw = make_gateway(server.url, clock=clock, retry_attempts=3, breaker_threshold=3, breaker_reset_seconds=30)
    try:
        yield gw
    finally:
        await gw.close()


async def pay(gateway: StripePaymentGateway, key: str = "pay_0001") -> Any:
    return await gateway.create_card_payment(
        amount=Money(1000, "USD"), payment_method="pm_card_visa", idempotency_key=key, metadata={"payment_id": key}
    )


# -- retries ---------------------------------------------------------------------------------


async def test_a_payment_succeeds_on_the_third_attempt_with_one_idempotency_key(
    gateway: StripePaymentGateway, server: ScriptedStripe
) -> None:
    server.script = [SERVER_ERROR, RESET, OK]

    payment = await pay(gateway, "pay_42")

    assert payment.status is ProviderPaymentStatus.SUCCEEDED
    assert server.keys() == ["pay_42", "pay_42", "pay_42"]
    assert {r.body for r in server.requests} == {server.requests[0].body}  # the same request each time
    assert [(r.method, r.path) for r in server.requests] == [("POST", "/v1/payment_intents")] * 3
    assert gateway.breaker.state is BreakerState.CLOSED


@pytest.mark.parametrize(
    "answer",
    [SERVER_ERROR, Answer(503, ERROR), RATE_LIMITED, RESET, Answer(502, "<html>bad gateway</html>")],
    ids=["500", "503", "429", "connection reset", "502 not json"],
)
async def test_a_provider_failure_is_retried_then_unavailable(
    gateway: StripePaymentGateway, server: ScriptedStripe, answer: Answer
) -> None:
    server.script = [answer]

    with pytest.raises(Unavailable) as caught:
        await pay(gateway, "pay_7")

    assert isinstance(caught.value, PaymentProviderUnavailable)
    assert caught.value.code == "payment_provider_unavailable"
    assert caught.value.retry_after == 1  # one failure: the breaker is still closed
    assert caught.value.details == {"retry_after": 1}
    assert server.keys() == ["pay_7", "pay_7", "pay_7"]


@pytest.mark.parametrize(
    ("answer", "attempts"),
    [(Answer(200, "<html>a proxy's page</html>"), 3), (Answer(200, []), 1), (Answer(200, {"id": "pi_1"}), 1)],
    ids=["not json: retried", "not an object", "no amount"],
)
async def test_an_unreadable_answer_is_a_provider_failure(
    gateway: StripePaymentGateway, server: ScriptedStripe, answer: Answer, attempts: int
) -> None:
    server.script = [answer]

    with pytest.raises(Unavailable) as caught:
        await pay(gateway)

    assert caught.value.code == "payment_provider_unavailable"
    assert len(server.requests) == attempts


async def test_should_retry_false_forbids_retrying_a_500(gateway: StripePaymentGateway, server: ScriptedStripe) -> None:
    server.script = [Answer(500, ERROR, headers={"Stripe-Should-Retry": "false"})]

    with pytest.raises(Unavailable):
        await pay(gateway)

    assert len(server.requests) == 1


async def test_should_retry_true_forces_retrying_a_400(gateway: StripePaymentGateway, server: ScriptedStripe) -> None:
    lock_timeout = {"error": {"type": "invalid_request_error", "code": "lock_timeout", "message": "locked"}}
    server.script = [Answer(400, lock_timeout, headers={"Stripe-Should-Retry": "true"}), OK]

    payment = await pay(gateway, "pay_8")

    assert payment.status is ProviderPaymentStatus.SUCCEEDED
    assert server.keys() == ["pay_8", "pay_8"]


async def test_an_invalid_request_is_not_retried(gateway: StripePaymentGateway, server: ScriptedStripe) -> None:
    body = {
        "error": {
            "type": "invalid_request_error",
            "code": "resource_missing",
            "param": "payment_method",
            "message": "No such PaymentMethod: 'pm_x'; key sk_test_abc123 was used",
        }
    }
    server.script = [Answer(400, body)]

    with pytest.raises(Invalid) as caught:
        await pay(gateway)

    assert len(server.requests) == 1
    assert caught.value.code == "payment_request_invalid"
    assert caught.value.message == "No such PaymentMethod: 'pm_x'; key [redacted] was used"
    assert caught.value.details == {
        "provider_status": 400,
        "provider_code": "resource_missing",
        "param": "payment_method",
    }


async def test_a_conflict_that_persists_is_unavailable_but_not_a_provider_failure(
    server: ScriptedStripe, clock: FixedClock
) -> None:
    gw = make_gateway(server.url, clock=clock, retry_attempts=2, breaker_threshold=1)
    conflict = {"error": {"type": "idempotency_error", "message": "in progress"}}
    server.script = [Answer(409, conflict)]
    try:
        with pytest.raises(Unavailable) as caught:
            await pay(gw)
        assert (caught.value.code, caught.value.retry_after) == ("payment_provider_unavailable", 1)
        assert len(server.requests) == 2
        assert gw.breaker.state is BreakerState.CLOSED
    finally:
        await gw.close()


async def test_a_slow_provider_times_out_and_is_retried(server: ScriptedStripe, clock: FixedClock) -> None:
    gw = make_gateway(server.url, clock=clock, retry_attempts=2, timeout_seconds=0.05)
    server.script = [Answer(delay=0.2), OK]
    try:
        payment = await pay(gw, "pay_slow")
        assert payment.status is ProviderPaymentStatus.SUCCEEDED
        assert server.keys() == ["pay_slow", "pay_slow"]
    finally:
        await gw.close()


async def test_a_refund_is_retried_with_its_idempotency_key(
    gateway: StripePaymentGateway, server: ScriptedStripe
) -> None:
    server.script = [RATE_LIMITED, Answer(body=REFUND)]

    refund = await gateway.refund(payment_reference="pi_scripted", amount=Money(300, "USD"), idempotency_key="ref_1")

    assert (refund.reference, refund.amount, refund.succeeded) == ("re_scripted", Money(300, "USD"), True)
    assert server.keys() == ["ref_1", "ref_1"]
    assert [r.path for r in server.requests] == ["/v1/refunds"] * 2
    assert server.requests[0].body == "payment_intent=pi_scripted&amount=300"


async def test_a_failed_refund_reports_its_reason(gateway: StripePaymentGateway, server: ScriptedStripe) -> None:
    server.script = [Answer(body=REFUND | {"status": "failed", "failure_reason": "expired_or_canceled_card"})]

    refund = await gateway.refund(payment_reference="pi_scripted", amount=Money(300, "USD"), idempotency_key="ref_2")

    assert (refund.succeeded, refund.failure_code) == (False, "expired_or_canceled_card")


async def test_a_look_up_is_retried(gateway: StripePaymentGateway, server: ScriptedStripe) -> None:
    server.script = [SERVER_ERROR, OK]

    payment = await gateway.get_payment("pi_scripted")

    assert payment.reference == "pi_scripted"
    assert [(r.method, r.path) for r in server.requests] == [("GET", "/v1/payment_intents/pi_scripted")] * 2


async def test_stripes_own_decline_shape_is_a_failed_payment(
    gateway: StripePaymentGateway, server: ScriptedStripe
) -> None:
    # What api.stripe.com answers to a declined confirmation (localstripe leaves out the intent).
    decline = {
        "error": {
            "type": "card_error",
            "code": "card_declined",
            "decline_code": "insufficient_funds",
            "message": "Your card has insufficient funds.",
            "payment_intent": INTENT | {"id": "pi_declined", "status": "requires_payment_method"},
        }
    }
    server.script = [Answer(402, decline, headers={"Stripe-Should-Retry": "false"})]

    payment = await pay(gateway)

    assert len(server.requests) == 1
    assert (payment.reference, payment.status, payment.failure_code, payment.failure_message) == (
        "pi_declined",
        ProviderPaymentStatus.FAILED,
        "insufficient_funds",
        "Your card has insufficient funds.",
    )
    assert payment.amount == Money(1000, "USD")


async def test_what_is_sent_to_stripe(gateway: StripePaymentGateway, server: ScriptedStripe) -> None:
    await pay(gateway, "pay_body")

    request = server.requests[0]
    assert request.body == (
        "amount=1000&currency=usd&payment_method=pm_card_visa&payment_method_types[0]=card"
        "&confirm=true&metadata[payment_id]=pay_body"
    )
    assert request.headers["Authorization"] == "Bearer sk_test_tillbox"


# -- the breaker -----------------------------------------------------------------------------


async def test_the_breaker_opens_after_the_threshold_and_fails_fast(
    gateway: StripePaymentGateway, server: ScriptedStripe, clock: FixedClock
) -> None:
    server.script = [SERVER_ERROR]
    for _ in range(2):
        with pytest.raises(Unavailable):
            await pay(gateway)
    assert gateway.breaker.state is BreakerState.CLOSED
    with pytest.raises(Unavailable) as third:
        await pay(gateway)
    assert third.value.retry_after == 30  # this failure opened it
    assert gateway.breaker.state is BreakerState.OPEN
    assert len(server.requests) == 9  # three calls, three attempts each

    clock.advance(seconds=12.5)
    for call in (pay(gateway), gateway.get_payment("pi_x")):
        with pytest.raises(Unavailable) as fast:
            await call
        assert (fast.value.code, fast.value.retry_after) == ("payment_provider_unavailable", 18)
        assert isinstance(fast.value, PaymentProviderUnavailable)
    with pytest.raises(Unavailable):
        await gateway.refund(payment_reference="pi_x", amount=Money(1, "USD"), idempotency_key="r")
    assert len(server.requests) == 9  # nothing reached the provider

    clock.advance(seconds=17.5)
    assert gateway.breaker.state is BreakerState.HALF_OPEN
    server.script = [OK]
    server.requests.clear()
    payment = await pay(gateway, "pay_trial")
    assert payment.status is ProviderPaymentStatus.SUCCEEDED
    assert server.keys() == ["pay_trial"]
    assert gateway.breaker.state is BreakerState.CLOSED


async def test_a_failed_trial_opens_the_breaker_again(
    gateway: StripePaymentGateway, server: ScriptedStripe, clock: FixedClock
) -> None:
    server.script = [RESET]
    for _ in range(3):
        with pytest.raises(Unavailable):
            await pay(gateway)
    clock.advance(seconds=30)
    assert gateway.breaker.state is BreakerState.HALF_OPEN
    server.requests.clear()

    with pytest.raises(Unavailable) as trial:
        await pay(gateway)

    assert len(server.requests) == 3  # the trial is one call, with its retries
    assert trial.value.retry_after == 30
    assert gateway.breaker.state is BreakerState.OPEN


async def test_declines_and_invalid_requests_do_not_count_as_provider_failures(
    server: ScriptedStripe, clock: FixedClock
) -> None:
    gw = make_gateway(server.url, clock=clock, retry_attempts=1, breaker_threshold=2)
    decline = {"error": {"type": "card_error", "code": "card_declined", "payment_intent": INTENT}}
    invalid = {"error": {"type": "invalid_request_error", "message": "bad"}}
    server.script = [SERVER_ERROR, Answer(402, decline), SERVER_ERROR, Answer(400, invalid), SERVER_ERROR, OK]
    try:
        with pytest.raises(Unavailable):
            await pay(gw)
        assert (await pay(gw)).status is ProviderPaymentStatus.FAILED
        with pytest.raises(Unavailable):
            await pay(gw)
        with pytest.raises(Invalid):
            await pay(gw)
        with pytest.raises(Unavailable):
            await pay(gw)
        assert gw.breaker.state is BreakerState.CLOSED  # never two failures in a row
        assert (await pay(gw)).status is ProviderPaymentStatus.SUCCEEDED
        assert len(server.requests) == 6
    finally:
        await gw.close()


@pytest.mark.parametrize(
    ("wait", "expected"),
    [
        (tenacity.wait_exponential(multiplier=0.5, max=8), [(0.5, 0.5), (1.0, 1.0), (2.0, 2.0)]),
        (None, [(0.5, 1.0), (1.0, 1.5), (2.0, 2.5)]),  # the default: exponential, up to 0.5 s of jitter
    ],
    ids=["injected", "default"],
)
async def test_retries_wait_by_the_backoff_strategy(
    server: ScriptedStripe, clock: FixedClock, wait: Any, expected: list[tuple[float, float]]
) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    # wait=None: the gateway's own default (make_gateway's is no wait at all).
    gw = make_gateway(server.url, clock=clock, retry_attempts=4, wait=wait, sleep=sleep)
    server.script = [SERVER_ERROR]
    try:
        with pytest.raises(Unavailable):
            await pay(gw)
    finally:
        await gw.close()
    assert len(waits) == 3
    for seconds, (low, high) in zip(waits, expected, strict=True):
        assert low <= seconds <= high

"""The PaymentGateway on Stripe: PaymentIntents, refunds and signed webhooks.

stripe-python's own retries are off (``max_network_retries=0``): tenacity retries network
errors, 409, 429 and 5xx, and obeys ``Stripe-Should-Retry`` (``true`` forces a retry,
``false`` forbids one), with exponential backoff and jitter. Every attempt sends the
caller's idempotency key, so Stripe applies a create or a refund once however many attempts
reach it. A circuit breaker turns repeated provider failures into fast
``Unavailable(payment_provider_unavailable)`` answers without touching the network.

What counts as a provider failure (for the breaker): no answer (network error, timeout), and
429 or 5xx after the retries. A decline, an invalid request or refused credentials are
answers: they close the breaker's count of consecutive failures.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import aiohttp
import stripe
import tenacity

from adapters.payments.breaker import CircuitBreaker, CircuitOpen
from core.domain.errors import DomainError, Invalid, PaymentProviderUnavailable, Unavailable
from core.domain.money import Money
from core.ports.clock import Clock
from core.ports.payments import (
    ProviderEvent,
    ProviderEventKind,
    ProviderPayment,
    ProviderPaymentStatus,
    ProviderRefund,
)

log = logging.getLogger("tillbox.payments.stripe")

T = TypeVar("T")

WEBHOOK_TOLERANCE_SECONDS = 300
UNAVAILABLE = "payment_provider_unavailable"
REQUEST_INVALID = "payment_request_invalid"

_STATUSES = {
    "requires_action": ProviderPaymentStatus.REQUIRES_ACTION,
    "requires_source_action": ProviderPaymentStatus.REQUIRES_ACTION,  # API versions before 2019-02-11
    # Never the answer to a create with confirm=true; the client can confirm with the secret.
    "requires_confirmation": ProviderPaymentStatus.REQUIRES_ACTION,
    "processing": ProviderPaymentStatus.PROCESSING,
    "requires_capture": ProviderPaymentStatus.PROCESSING,  # authorised, captured automatically
    "succeeded": ProviderPaymentStatus.SUCCEEDED,
    "requires_payment_method": ProviderPaymentStatus.FAILED,  # after a failed confirmation
    "requires_source": ProviderPaymentStatus.FAILED,
    "canceled": ProviderPaymentStatus.CANCELED,
}

# Keys never reach a message, even masked ones that Stripe echoes.
_SECRET = re.compile(r"\b(?:sk|rk|pk|whsec)_[A-Za-z0-9_*]+")


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if not headers:
        return None
    for key, value in headers.items():
        if key.lower() == name:
            return str(value)
    return None


def _is_network_error(exc: BaseException) -> bool:
    # stripe wraps errors raised while sending; those raised while reading the body are not.
    return isinstance(exc, stripe.APIConnectionError | aiohttp.ClientError | asyncio.TimeoutError)


class MalformedAnswer(Exception):
    """Stripe answered 2xx with something that is not the object we asked for."""


def _is_provider_failure(exc: BaseException) -> bool:
    """No usable answer: the network failed, Stripe is overloaded (429) or broken (5xx), or
    what came back is not an API answer at all."""
    if _is_network_error(exc) or isinstance(exc, MalformedAnswer):
        return True
    if not isinstance(exc, stripe.StripeError):
        return False
    status = exc.http_status
    if status is not None and (status == 429 or status >= 500):
        return True
    return isinstance(exc, stripe.APIError) and (status is None or status < 400)


def _should_retry(exc: BaseException) -> bool:
    if isinstance(exc, stripe.StripeError):
        verdict = _header(exc.headers, "stripe-should-retry")
        if verdict == "true":
            return True
        if verdict == "false":
            return False
        if exc.http_status == 409:  # a concurrent request with the same key, or a lock timeout
            return True
    return _is_provider_failure(exc)


def _value(obj: Any, key: str) -> Any:
    """A field of a StripeObject or of a plain dict (events, error bodies), None if absent."""
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def _plain(obj: Any) -> dict[str, Any] | None:
    if obj is None:
        return None
    if isinstance(obj, stripe.StripeObject):
        return obj.to_dict()
    return dict(obj)


def _money(amount: Any, currency: Any) -> Money:
    return Money(int(amount), str(currency).upper())


def _failure_code(error: Any) -> str | None:
    return _value(error, "decline_code") or _value(error, "code")


class StripePaymentGateway:
    """Stripe behind the PaymentGateway port. Call ``close()`` when done (it owns an
    aiohttp session, made on the first call, inside the running event loop)."""

    def __init__(
        self,
        *,
        secret_key: str,
        api_base: str = "https://api.stripe.com",
        webhook_secret: str | None,
        currency: str,
        clock: Clock,
        retry_attempts: int = 3,
        breaker_threshold: int = 5,
        breaker_reset_seconds: float = 30.0,
        timeout_seconds: float = 20,
        wait: tenacity.wait.wait_base | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        """``retry_attempts`` counts every attempt, the first included. ``wait`` is the
        backoff between attempts: by default exponential from 0.5 s to 8 s plus up to 0.5 s of
        jitter (tests pass ``tenacity.wait_none()``); ``sleep`` waits it out."""
        if retry_attempts < 1:
            raise ValueError("retry_attempts must be at least 1")
        self._http = stripe.AIOHTTPClient(timeout=aiohttp.ClientTimeout(total=timeout_seconds))
        self._client = stripe.StripeClient(
            secret_key,
            http_client=self._http,
            base_addresses={"api": api_base.rstrip("/")},
            max_network_retries=0,
        )
        self._webhook_secret = webhook_secret
        self._currency = currency
        self._attempts = retry_attempts
        self._wait = wait if wait is not None else tenacity.wait_exponential_jitter(multiplier=0.5, max=8.0, jitter=0.5)
        self._sleep = sleep
        self._breaker = CircuitBreaker(threshold=breaker_threshold, reset_seconds=breaker_reset_seconds, clock=clock)

    @property
    def available(self) -> bool:
        return True

    @property
    def breaker(self) -> CircuitBreaker:
        return self._breaker

    async def close(self) -> None:
        await self._http.close_async()

    # -- the port -------------------------------------------------------------------------

    async def create_card_payment(
        self, *, amount: Money, payment_method: str, idempotency_key: str, metadata: dict[str, str]
    ) -> ProviderPayment:
        self._check_currency(amount)
        params: dict[str, Any] = {
            "amount": amount.amount,
            "currency": amount.currency.lower(),
            "payment_method": payment_method,
            # Cards only: no redirect-based methods, so confirmation needs no return_url.
            "payment_method_types": ["card"],
            "confirm": True,
            "metadata": dict(metadata),
        }

        async def create() -> ProviderPayment:
            try:
                intent = await self._retrying(
                    lambda: self._client.v1.payment_intents.create_async(
                        params,  # type: ignore[arg-type]
                        {"idempotency_key": idempotency_key},
                    )
                )
            except stripe.CardError as exc:
                return await self._declined(exc, amount)
            return _read(self._payment, intent)

        return await self._guarded(create)

    async def get_payment(self, reference: str) -> ProviderPayment:
        if not reference:
            raise Invalid("A payment reference is required.", code=REQUEST_INVALID)

        async def retrieve() -> ProviderPayment:
            intent = await self._retrying(lambda: self._client.v1.payment_intents.retrieve_async(reference))
            return _read(self._payment, intent)

        return await self._guarded(retrieve)

    async def refund(self, *, payment_reference: str, amount: Money, idempotency_key: str) -> ProviderRefund:
        self._check_currency(amount)
        params = {"payment_intent": payment_reference, "amount": amount.amount}

        async def create() -> ProviderRefund:
            refund = await self._retrying(
                lambda: self._client.v1.refunds.create_async(
                    params,  # type: ignore[arg-type]
                    {"idempotency_key": idempotency_key},
                )
            )
            return _read(_refund, refund, payment_reference)

        return await self._guarded(create)

    def parse_event(self, payload: bytes, signature_header: str | None) -> ProviderEvent | None:
        if not self._webhook_secret:
            # 503, not 400: Stripe keeps retrying for days, so no event is lost while the
            # operator sets the secret.
            raise Unavailable(
                "Stripe webhooks are not configured on this store: set [stripe] webhook_secret.",
                code=UNAVAILABLE,
            )
        try:
            stripe.WebhookSignature.verify_header(
                payload, signature_header, self._webhook_secret, WEBHOOK_TOLERANCE_SECONDS
            )
            event = json.loads(payload)
        except (stripe.SignatureVerificationError, ValueError) as exc:  # JSON and UTF-8 errors are ValueErrors
            raise Invalid("The webhook signature does not verify.", code="invalid_signature") from exc
        try:
            return self._event(event)
        except (AttributeError, KeyError, TypeError, ValueError, Invalid) as exc:
            raise Invalid("The webhook payload is not a Stripe event.", code="invalid_signature") from exc

    # -- translation ----------------------------------------------------------------------

    def _check_currency(self, amount: Money) -> None:
        if amount.currency != self._currency:
            raise Invalid(
                f"This store takes payments in {self._currency}, not {amount.currency}.",
                code="currency_mismatch",
            )

    def _payment(self, intent: Any) -> ProviderPayment:
        status = _STATUSES.get(str(_value(intent, "status")), ProviderPaymentStatus.PROCESSING)
        error = _value(intent, "last_payment_error")
        needs_action = status is ProviderPaymentStatus.REQUIRES_ACTION
        failed = status is ProviderPaymentStatus.FAILED
        return ProviderPayment(
            reference=str(_value(intent, "id")),
            status=status,
            amount=_money(_value(intent, "amount"), _value(intent, "currency")),
            client_secret=_value(intent, "client_secret") if needs_action else None,
            next_action=_plain(_value(intent, "next_action")) if needs_action else None,
            failure_code=_failure_code(error) if failed else None,
            failure_message=_value(error, "message") if failed else None,
        )

    async def _declined(self, exc: stripe.CardError, amount: Money) -> ProviderPayment:
        """A 402 on confirmation: the PaymentIntent exists and awaits another card."""
        body = exc.json_body if isinstance(exc.json_body, dict) else {}
        error = body.get("error") or {}
        intent = error.get("payment_intent") or {}
        reference = intent.get("id")
        if reference is None and error.get("charge"):
            # Stripe puts the PaymentIntent in the error; emulators may give only the charge.
            charge_id = str(error["charge"])
            charge = await self._retrying(lambda: self._client.v1.charges.retrieve_async(charge_id))
            reference = _value(charge, "payment_intent")
        if reference is None:
            raise MalformedAnswer("a decline that names no PaymentIntent")
        return _read(
            lambda: ProviderPayment(
                reference=str(reference),
                status=ProviderPaymentStatus.FAILED,
                amount=_money(intent["amount"], intent["currency"]) if "amount" in intent else amount,
                failure_code=_failure_code(error) or exc.code or "card_declined",
                failure_message=error.get("message"),
            )
        )

    def _event(self, event: dict[str, Any]) -> ProviderEvent | None:
        kind = event["type"]
        obj = event["data"]["object"]
        metadata = {str(k): str(v) for k, v in (obj.get("metadata") or {}).items()}
        if kind == "payment_intent.succeeded":
            return ProviderEvent(
                id=str(event["id"]),
                kind=ProviderEventKind.PAYMENT_SUCCEEDED,
                payment_reference=str(obj["id"]),
                amount=_money(obj["amount"], obj["currency"]),
                metadata=metadata,
            )
        if kind == "payment_intent.payment_failed":
            return ProviderEvent(
                id=str(event["id"]),
                kind=ProviderEventKind.PAYMENT_FAILED,
                payment_reference=str(obj["id"]),
                amount=_money(obj["amount"], obj["currency"]),
                failure_code=_failure_code(obj.get("last_payment_error")),
                metadata=metadata,
            )
        if kind == "charge.refunded":
            if not obj.get("payment_intent"):
                return None  # a charge made without a PaymentIntent was not made by us
            return ProviderEvent(
                id=str(event["id"]),
                kind=ProviderEventKind.REFUNDED,
                payment_reference=str(obj["payment_intent"]),
                amount=_money(obj["amount_refunded"], obj["currency"]),
                metadata=metadata,
            )
        return None

    # -- resilience -----------------------------------------------------------------------

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        """One request with tenacity's retries; the caller's closure sends the same
        idempotency key on every attempt. Raises the last attempt's error."""
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self._attempts),
            wait=self._wait,
            sleep=self._sleep,
            retry=tenacity.retry_if_exception(_should_retry),
            before_sleep=_log_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await call()
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    async def _guarded(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run one operation behind the breaker and translate what is left of Stripe's errors."""
        try:
            self._breaker.check()
        except CircuitOpen as exc:
            raise PaymentProviderUnavailable(
                "Card payments are temporarily unavailable; try again shortly.",
                retry_after=max(1, math.ceil(exc.retry_after)),
            ) from None
        try:
            result = await operation()
        except Exception as exc:
            if _is_provider_failure(exc):
                self._breaker.record_failure()
                log.warning("payment provider failure: %s (status %s)", type(exc).__name__, _status(exc))
                raise PaymentProviderUnavailable(
                    "The payment provider cannot be reached; try again shortly.",
                    retry_after=max(1, math.ceil(self._breaker.seconds_left())),
                ) from exc
            if isinstance(exc, stripe.StripeError):
                self._breaker.record_success()  # the provider answered
                raise _refused(exc) from exc
            self._breaker.abandon()
            raise
        except BaseException:  # cancelled: no verdict on the provider
            self._breaker.abandon()
            raise
        self._breaker.record_success()
        return result


def _read(translate: Callable[..., T], *answer: Any) -> T:
    try:
        return translate(*answer)
    except (AttributeError, KeyError, TypeError, ValueError, Invalid) as exc:
        raise MalformedAnswer(f"unexpected answer from Stripe: {type(exc).__name__}") from exc


def _refund(refund: Any, payment_reference: str) -> ProviderRefund:
    status = _value(refund, "status")
    return ProviderRefund(
        reference=str(_value(refund, "id")),
        payment_reference=_value(refund, "payment_intent") or payment_reference,
        amount=_money(_value(refund, "amount"), _value(refund, "currency")),
        succeeded=status == "succeeded",
        # A refund that failed always carries a code (so the core can tell it from a pending one).
        failure_code=(_value(refund, "failure_reason") or status) if status in ("failed", "canceled") else None,
    )


def _status(exc: BaseException) -> int | None:
    return exc.http_status if isinstance(exc, stripe.StripeError) else None


def _refused(exc: stripe.StripeError) -> DomainError:
    """A 4xx answer other than a decline: our request or our credentials are wrong."""
    status = exc.http_status
    if status == 409:
        # Another request with the same idempotency key is still running at Stripe.
        return PaymentProviderUnavailable(
            "The payment provider is still processing this request; try again shortly.", retry_after=1
        )
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        message = "The payment provider refused this store's credentials; check [stripe] secret_key."
    else:
        message = _SECRET.sub("[redacted]", exc.user_message or "The payment provider refused the request.")
    details: dict[str, Any] = {"provider_status": status}
    if exc.code:
        details["provider_code"] = exc.code
    param = getattr(exc, "param", None)
    if param:
        details["param"] = param
    return Invalid(message, code=REQUEST_INVALID, details=details)


def _log_retry(state: tenacity.RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.info(
        "payment provider attempt %d failed (%s, status %s); retrying",
        state.attempt_number,
        type(exc).__name__,
        _status(exc) if exc else None,
    )

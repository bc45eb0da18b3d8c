"""Notifications from payment providers: /api/v1/webhooks/*."""

from __future__ import annotations

from aiohttp import web

from core.domain.errors import Invalid
from entrypoints.http.api import Api, Input, Reply, json_response
from entrypoints.http.keys import GATEWAY, PAYMENTS
from entrypoints.http.middlewares import HttpError
from entrypoints.http.routes.common import err

api = Api()


@api.operation(
    "POST",
    "/api/v1/webhooks/stripe",
    summary="Stripe's webhook endpoint",
    tag="webhooks",
    auth="none",
    idempotent=False,  # Stripe's own event ids make each event apply once
    headers=(),
    replies=(
        Reply(200, "Received (applied, already applied before, or of a kind we ignore).", {"type": "object"}),
        err(400, "The signature does not verify, is older than 300 s, or is missing (`invalid_signature`)."),
        err(413, "The body is larger than the server accepts."),
        err(503, "Card payments are not configured here: Stripe keeps the event and sends it again later."),
    ),
)
async def stripe_webhook(request: web.Request, i: Input) -> web.Response:
    """Signed with the endpoint secret (`Stripe-Signature`, 300 s tolerance). Handles
    `payment_intent.succeeded`, `payment_intent.payment_failed` and `charge.refunded`; each
    event id is applied once, and every signal about a payment goes through the same state
    machine as the API's own answers, so an order changes exactly once."""
    payload = await request.read()
    try:
        event = request.app[GATEWAY].parse_event(payload, request.headers.get("Stripe-Signature"))
    except Invalid as exc:
        # Not the 422 of an invalid request: a signature that does not verify is a 400, as
        # Stripe and the documented reply expect (it shows as a failed delivery in Stripe).
        raise HttpError(400, exc.code, exc.message, exc.details) from None
    if event is None:
        return json_response({"received": True, "applied": False})
    applied = await request.app[PAYMENTS].handle_provider_event(event)
    return json_response({"received": True, "applied": applied})

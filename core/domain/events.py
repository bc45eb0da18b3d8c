"""Domain events: what happened, written to the outbox in the same transaction as the change.

The payload is the object as the API shows it (PRODUCT.md), already JSON-ready: amounts as
integers in minor units with the currency beside them, timestamps as RFC 3339 UTC text.
It never carries secrets (a payment's client secret stays out): events leave the store.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import attrs

from core.domain.orders import Order
from core.domain.payments import Payment, Refund

ORDER_CREATED = "order.created"
ORDER_PAID = "order.paid"
ORDER_FULFILLED = "order.fulfilled"
ORDER_CANCELLED = "order.cancelled"
ORDER_EXPIRED = "order.expired"
PAYMENT_SUCCEEDED = "payment.succeeded"
PAYMENT_FAILED = "payment.failed"
REFUND_CREATED = "refund.created"


@attrs.frozen
class DomainEvent:
    id: str
    type: str  # e.g. "order.paid"
    aggregate_type: str  # "order", "payment", "refund"
    aggregate_id: str
    occurred_at: datetime
    payload: dict[str, Any]


def rfc3339(at: datetime) -> str:
    """The one textual form of a time on the wire and in the store (adapters/timestamps.py)."""
    if at.tzinfo is not UTC:
        at = at.astimezone(UTC)
    return at.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _optional_time(at: datetime | None) -> str | None:
    return None if at is None else rfc3339(at)


def order_payload(order: Order) -> dict[str, Any]:
    return {
        "id": order.id,
        "customer_id": order.customer_id,
        "status": order.status.value,
        "items": [
            {
                "product_id": line.product_id,
                "sku": line.sku,
                "name": line.name,
                "unit_price": line.unit_price.amount,
                "quantity": line.quantity,
                "line_total": line.line_total.amount,
            }
            for line in order.lines
        ],
        "subtotal": order.subtotal.amount,
        "total": order.total.amount,
        "amount_paid": order.amount_paid,
        "amount_refunded": order.amount_refunded,
        "currency": order.currency,
        "created_at": rfc3339(order.created_at),
        "updated_at": rfc3339(order.updated_at),
        "expires_at": _optional_time(order.expires_at),
    }


def payment_payload(payment: Payment) -> dict[str, Any]:
    return {
        "id": payment.id,
        "order_id": payment.order_id,
        "method": payment.method.value,
        "provider": payment.provider,
        "status": payment.status.value,
        "amount": payment.amount.amount,
        "currency": payment.amount.currency,
        "provider_reference": payment.provider_reference,
        "failure_code": payment.failure_code,
        "reference": payment.reference,
        "created_at": rfc3339(payment.created_at),
        "updated_at": rfc3339(payment.updated_at),
    }


def refund_payload(refund: Refund) -> dict[str, Any]:
    return {
        "id": refund.id,
        "payment_id": refund.payment_id,
        "order_id": refund.order_id,
        "amount": refund.amount.amount,
        "currency": refund.amount.currency,
        "reason": refund.reason,
        "status": refund.status.value,
        "provider_reference": refund.provider_reference,
        "created_at": rfc3339(refund.created_at),
    }


def order_event(event_id: str, type: str, order: Order, at: datetime) -> DomainEvent:
    return DomainEvent(event_id, type, "order", order.id, at, order_payload(order))


def payment_event(event_id: str, type: str, payment: Payment, at: datetime) -> DomainEvent:
    return DomainEvent(event_id, type, "payment", payment.id, at, payment_payload(payment))


def refund_event(event_id: str, type: str, refund: Refund, at: datetime) -> DomainEvent:
    return DomainEvent(event_id, type, "refund", refund.id, at, refund_payload(refund))

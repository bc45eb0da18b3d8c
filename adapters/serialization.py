"""The one cattrs Converter: domain objects to the JSON-ready shapes of PRODUCT.md,
and ``to_json``, the one way those shapes become bytes.

The wire shapes differ from the entities on purpose (a product's ``price`` is its
amount and ``currency`` sits beside it; password hashes and versions never leave),
so each resource has an explicit unstructure hook. Timestamps stay ``datetime``
objects until ``to_json``: orjson writes RFC 3339 in C, 20 times faster than
formatting them in Python (a page of products has 40). The core never imports this.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import cattrs
import orjson

from core.domain.audit import AuditEntry
from core.domain.catalog import Product
from core.domain.events import order_payload, payment_payload, refund_payload
from core.domain.orders import Order
from core.domain.payments import Payment, Refund
from core.domain.users import User

converter = cattrs.Converter()
converter.register_unstructure_hook(datetime, lambda at: at)  # to_json writes it
_JSON_OPTIONS = orjson.OPT_UTC_Z


def to_json(data: Any) -> bytes:
    """JSON bytes; datetimes as RFC 3339 in UTC with a ``Z``."""
    return orjson.dumps(data, option=_JSON_OPTIONS)


def _user(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "role": user.role.value,
        "status": user.status.value,
        "created_at": user.created_at,
        "updated_at": user.updated_at,
    }


def _product(product: Product) -> dict[str, Any]:
    return {
        "id": product.id,
        "sku": product.sku,
        "name": product.name,
        "description": product.description,
        "price": product.price.amount,
        "currency": product.price.currency,
        "stock": product.stock,
        "active": product.active,
        "created_at": product.created_at,
        "updated_at": product.updated_at,
    }


def _audit_entry(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": entry.at,
        "actor_id": entry.actor_id,
        "action": entry.action,
        "object_type": entry.object_type,
        "object_id": entry.object_id,
        "source_ip": entry.source_ip,
        "details": entry.details,
    }


def _payment(payment: Payment) -> dict[str, Any]:
    wire = payment_payload(payment)
    if payment.client_secret is not None:  # only while the customer still has something to do
        wire["client_secret"] = payment.client_secret
        wire["next_action"] = payment.next_action
    return wire


# Orders, payments and refunds look on the wire exactly as in their domain events' payloads.
converter.register_unstructure_hook(User, _user)
converter.register_unstructure_hook(Order, order_payload)
converter.register_unstructure_hook(Payment, _payment)
converter.register_unstructure_hook(Refund, refund_payload)
converter.register_unstructure_hook(Product, _product)
converter.register_unstructure_hook(AuditEntry, _audit_entry)


def to_wire(obj: Any) -> Any:
    """The JSON-ready form of a domain object (or a list of them)."""
    return converter.unstructure(obj)

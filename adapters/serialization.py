"""The one cattrs Converter: domain objects to the JSON-ready shapes of PRODUCT.md.

The wire shapes differ from the entities on purpose (a product's ``price`` is its
amount and ``currency`` sits beside it; password hashes and versions never leave),
so each resource has an explicit unstructure hook. The core never imports this.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import cattrs

from adapters.timestamps import format_timestamp
from core.domain.audit import AuditEntry
from core.domain.catalog import Product
from core.domain.users import User

converter = cattrs.Converter()
converter.register_unstructure_hook(datetime, format_timestamp)


def _user(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "role": user.role.value,
        "status": user.status.value,
        "created_at": format_timestamp(user.created_at),
        "updated_at": format_timestamp(user.updated_at),
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
        "created_at": format_timestamp(product.created_at),
        "updated_at": format_timestamp(product.updated_at),
    }


def _audit_entry(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": format_timestamp(entry.at),
        "actor_id": entry.actor_id,
        "action": entry.action,
        "object_type": entry.object_type,
        "object_id": entry.object_id,
        "source_ip": entry.source_ip,
        "details": entry.details,
    }


converter.register_unstructure_hook(User, _user)
converter.register_unstructure_hook(Product, _product)
converter.register_unstructure_hook(AuditEntry, _audit_entry)


def to_wire(obj: Any) -> Any:
    """The JSON-ready form of a domain object (or a list of them)."""
    return converter.unstructure(obj)

"""JSON Schemas (2020-12, as OpenAPI 3.1 uses) of request bodies and resources.

Declared once: ``api.py`` validates requests against these and ``openapi.py``
publishes the very same objects, so the document cannot drift from the checks.
"""

from __future__ import annotations

from typing import Any

from core.domain.catalog import MAX_DESCRIPTION_LENGTH, MAX_NAME_LENGTH, MAX_STOCK
from core.domain.money import MAX_AMOUNT
from core.domain.pagination import DEFAULT_LIMIT, MAX_LIMIT
from core.domain.users import MAX_EMAIL_LENGTH, MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


TIMESTAMP: Schema = {"type": "string", "format": "date-time", "description": "RFC 3339, UTC"}
ID: Schema = {"type": "string", "minLength": 1, "maxLength": 64}
AMOUNT: Schema = {"type": "integer", "minimum": 0, "maximum": MAX_AMOUNT, "description": "Minor units (cents)."}
# The store's currency is configuration, so schemas name it with this placeholder and
# ``specialize`` puts the configured code in when an application is built.
CURRENCY: Schema = {"x-tillbox-placeholder": "store-currency"}
EMAIL: Schema = {"type": "string", "minLength": 3, "maxLength": MAX_EMAIL_LENGTH, "format": "email"}
PASSWORD: Schema = {"type": "string", "minLength": MIN_PASSWORD_LENGTH, "maxLength": MAX_PASSWORD_LENGTH}
ROLE: Schema = {"type": "string", "enum": ["customer", "staff", "admin"]}
STATUS: Schema = {"type": "string", "enum": ["active", "disabled"]}
SKU: Schema = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._\\-]{0,63}$"}
# "Something other than white space": spelled out instead of \\S because Python's and
# ECMAScript's \\s differ (U+0085, U+001C-U+001F, U+FEFF), and clients validate with the latter.
_BLANK = "\\t\\n\\v\\f\\r \\u001c-\\u001f\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff"
NAME: Schema = {"type": "string", "minLength": 1, "maxLength": MAX_NAME_LENGTH, "pattern": f"[^{_BLANK}]"}
DESCRIPTION: Schema = {"type": "string", "maxLength": MAX_DESCRIPTION_LENGTH}
STOCK: Schema = {"type": "integer", "minimum": 0, "maximum": MAX_STOCK}


def specialize(schema: Any, currency: str) -> Any:
    """A copy of ``schema`` with the store's currency in place of its placeholder."""
    if schema == CURRENCY:
        return {"type": "string", "enum": [currency], "description": "ISO 4217: the store's currency."}
    if isinstance(schema, dict):
        return {key: specialize(value, currency) for key, value in schema.items()}
    if isinstance(schema, list):
        return [specialize(item, currency) for item in schema]
    return schema


def obj(properties: dict[str, Schema], required: list[str] | None = None, **extra: Any) -> Schema:
    """A closed object: unknown fields are refused, so a client can never sneak in
    ``id``, ``role``, ``status`` or timestamps."""
    schema: Schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    schema.update(extra)
    return schema


REFUND_FIELDS: dict[str, Schema] = {
    "id": ID,
    "payment_id": ID,
    "order_id": ID,
    "amount": AMOUNT,
    "currency": CURRENCY,
    "reason": {"type": "string"},
    "status": {"type": "string", "enum": ["pending", "succeeded", "failed"]},
    "provider_reference": {"type": ["string", "null"], "description": "e.g. Stripe's refund id"},
    "created_at": TIMESTAMP,
}
REFUND_REQUIRED = [
    "id",
    "payment_id",
    "order_id",
    "amount",
    "currency",
    "reason",
    "status",
    "provider_reference",
    "created_at",
]

# Resources (responses).
COMPONENTS: dict[str, Schema] = {
    "Error": obj(
        {
            "error": obj(
                {
                    "code": {"type": "string", "description": "Stable, machine-readable."},
                    "message": {"type": "string", "description": "For humans."},
                    "request_id": {"type": "string"},
                    "timestamp": TIMESTAMP,
                    "details": {"type": "object", "description": "Context; `fields` for validation errors."},
                },
                ["code", "message", "request_id", "timestamp", "details"],
            )
        },
        ["error"],
    ),
    "ListMeta": obj(
        {"has_more": {"type": "boolean"}, "next_cursor": {"type": ["string", "null"]}},
        ["has_more", "next_cursor"],
    ),
    "User": obj(
        {
            "id": ID,
            "email": {"type": "string"},
            "role": ROLE,
            "status": STATUS,
            "created_at": TIMESTAMP,
            "updated_at": TIMESTAMP,
        },
        ["id", "email", "role", "status", "created_at", "updated_at"],
    ),
    "Tokens": obj(
        {
            "access_token": {"type": "string"},
            "token_type": {"type": "string", "enum": ["Bearer"]},
            "expires_in": {"type": "integer", "description": "Seconds until the access token expires."},
            "refresh_token": {"type": "string", "description": "Single-use; each refresh returns a new one."},
        },
        ["access_token", "token_type", "expires_in", "refresh_token"],
    ),
    "Product": obj(
        {
            "id": ID,
            "sku": {"type": "string"},
            "name": {"type": "string"},
            "description": {"type": "string"},
            "price": AMOUNT,
            "currency": CURRENCY,
            "stock": STOCK,
            "active": {"type": "boolean"},
            "created_at": TIMESTAMP,
            "updated_at": TIMESTAMP,
        },
        ["id", "sku", "name", "description", "price", "currency", "stock", "active", "created_at", "updated_at"],
    ),
    "AuditEntry": obj(
        {
            "id": ID,
            "at": TIMESTAMP,
            "actor_id": {
                "type": ["string", "null"],
                "description": "null: the operator at the command line, or anonymous",
            },
            "action": {"type": "string"},
            "object_type": {"type": "string"},
            "object_id": {"type": ["string", "null"]},
            "source_ip": {"type": ["string", "null"]},
            "details": {"type": "object", "description": "Before and after, where they apply."},
        },
        ["id", "at", "actor_id", "action", "object_type", "object_id", "source_ip", "details"],
    ),
    "Order": obj(
        {
            "id": ID,
            "customer_id": ID,
            "status": {
                "type": "string",
                "enum": [
                    "pending_payment",
                    "paid",
                    "fulfilled",
                    "cancelled",
                    "expired",
                    "partially_refunded",
                    "refunded",
                ],
            },
            "items": {
                "type": "array",
                "items": obj(
                    {
                        "product_id": ID,
                        "sku": {"type": "string"},
                        "name": {"type": "string"},
                        "unit_price": AMOUNT,
                        "quantity": {"type": "integer", "minimum": 1},
                        "line_total": AMOUNT,
                    },
                    ["product_id", "sku", "name", "unit_price", "quantity", "line_total"],
                ),
            },
            "subtotal": AMOUNT,
            "total": AMOUNT,
            "amount_paid": AMOUNT,
            "amount_refunded": AMOUNT,
            "currency": CURRENCY,
            "created_at": TIMESTAMP,
            "updated_at": TIMESTAMP,
            "expires_at": {**TIMESTAMP, "type": ["string", "null"], "description": "null once partly paid"},
        },
        [
            "id",
            "customer_id",
            "status",
            "items",
            "subtotal",
            "total",
            "amount_paid",
            "amount_refunded",
            "currency",
            "created_at",
            "updated_at",
            "expires_at",
        ],
    ),
    "Payment": obj(
        {
            "id": ID,
            "order_id": ID,
            "method": {"type": "string", "enum": ["card", "manual"]},
            "provider": {"type": "string", "enum": ["stripe", "manual"]},
            "status": {"type": "string", "enum": ["requires_action", "processing", "succeeded", "failed", "canceled"]},
            "amount": AMOUNT,
            "currency": CURRENCY,
            "provider_reference": {"type": ["string", "null"]},
            "reference": {"type": ["string", "null"], "description": "Manual payments: the receipt or transfer."},
            "failure_code": {"type": ["string", "null"], "description": "e.g. the card's decline code"},
            "client_secret": {"type": "string", "description": "Only while the customer must act (3-D Secure)."},
            "next_action": {"type": ["object", "null"]},
            "created_at": TIMESTAMP,
            "updated_at": TIMESTAMP,
        },
        [
            "id",
            "order_id",
            "method",
            "provider",
            "status",
            "amount",
            "currency",
            "provider_reference",
            "reference",
            "failure_code",
            "created_at",
            "updated_at",
        ],
    ),
    "Refund": obj(REFUND_FIELDS, REFUND_REQUIRED),
    "RefundCreated": obj(
        {
            **REFUND_FIELDS,
            "refunds": {
                "type": "array",
                "items": ref("Refund"),
                "description": "Every refund this request made, one per payment refunded (almost always one).",
            },
        },
        [*REFUND_REQUIRED, "refunds"],
        description="The refund (the first, if the amount spans several payments) and all it made in `refunds`.",
    ),
    "Health": obj(
        {"status": {"type": "string"}, "checks": {"type": "object"}},
        ["status"],
    ),
}


def list_of(component: str) -> Schema:
    return obj({"data": {"type": "array", "items": ref(component)}, "meta": ref("ListMeta")}, ["data", "meta"])


# Request bodies.
CREDENTIALS = obj({"email": EMAIL, "password": {"type": "string", "maxLength": 1024}}, ["email", "password"])
REGISTER = obj({"email": EMAIL, "password": PASSWORD}, ["email", "password"])
REFRESH = obj({"refresh_token": {"type": "string", "minLength": 1, "maxLength": 512}}, ["refresh_token"])
CHANGE_PASSWORD = obj(
    {"current_password": {"type": "string", "maxLength": 1024}, "new_password": PASSWORD},
    ["current_password", "new_password"],
)
UPDATE_USER = obj({"role": ROLE, "status": STATUS}, minProperties=1)
CREATE_PRODUCT = obj(
    {
        "sku": SKU,
        "name": NAME,
        "description": DESCRIPTION,
        "price": AMOUNT,
        "currency": CURRENCY,
        "stock": STOCK,
        "active": {"type": "boolean"},
    },
    ["sku", "name", "price"],
)
UPDATE_PRODUCT = obj(
    {
        "sku": SKU,
        "name": NAME,
        "description": DESCRIPTION,
        "price": AMOUNT,
        "currency": CURRENCY,
        "active": {"type": "boolean"},
    },
    minProperties=1,
)
ADJUST_STOCK = obj(
    {
        "delta": {"type": "integer", "minimum": -MAX_STOCK, "maximum": MAX_STOCK, "not": {"const": 0}},
        "reason": {"type": "string", "maxLength": 500},
    },
    ["delta"],
)

# Query parameters.
LIMIT: Schema = {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}
# Long enough for any cursor the store makes (one sorted by name carries the name: up to 200
# characters, JSON-escaped, base64-encoded).
CURSOR: Schema = {"type": "string", "minLength": 1, "maxLength": 2048}

# Orders and payments.
QUANTITY: Schema = {"type": "integer", "minimum": 1, "maximum": 1000}
PLACE_ORDER = obj(
    {
        "items": {
            "type": "array",
            "minItems": 1,
            "maxItems": 100,
            "items": {
                "oneOf": [
                    obj({"product_id": ID, "quantity": QUANTITY}, ["product_id", "quantity"]),
                    obj({"sku": SKU, "quantity": QUANTITY}, ["sku", "quantity"]),
                ]
            },
        }
    },
    ["items"],
)
CANCEL_ORDER = obj({"reason": {"type": "string", "maxLength": 500}})
PAY = {
    "oneOf": [
        obj(
            {
                "method": {"const": "card"},
                "payment_method": {"type": "string", "pattern": "^pm_[A-Za-z0-9_]{1,200}$"},
            },
            ["method", "payment_method"],
        ),
        obj(
            {
                "method": {"const": "manual"},
                "reference": {"type": "string", "minLength": 1, "maxLength": 200},
                "amount": {**AMOUNT, "minimum": 1, "description": "Minor units; default: the balance due."},
            },
            ["method", "reference"],
        ),
    ]
}
REFUND = obj(
    {
        "amount": {**AMOUNT, "minimum": 1, "description": "Minor units; default: all that is still refundable."},
        "reason": {"type": "string", "minLength": 1, "maxLength": 500},
    },
    ["reason"],
)

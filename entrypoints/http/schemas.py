"""JSON Schemas (2020-12, as OpenAPI 3.1 uses) of request bodies and resources.

Declared once: ``api.py`` validates requests against these and ``openapi.py``
publishes the very same objects, so the document cannot drift from the checks.
"""

from __future__ import annotations

from typing import Any

from core.domain.api_keys import MAX_API_KEY_LIFETIME, MAX_API_KEY_NAME_LENGTH
from core.domain.catalog import MAX_DESCRIPTION_LENGTH, MAX_NAME_LENGTH, MAX_STOCK
from core.domain.money import MAX_AMOUNT
from core.domain.oauth import MAX_CLIENT_NAME_LENGTH, MAX_REDIRECT_URI_LENGTH, MAX_REDIRECT_URIS, GrantType
from core.domain.orders import MAX_LINES, MAX_QUANTITY
from core.domain.pagination import DEFAULT_LIMIT, MAX_LIMIT
from core.domain.payments import MAX_REASON_LENGTH, MAX_REFERENCE_LENGTH
from core.domain.scopes import SCOPES
from core.domain.users import MAX_EMAIL_LENGTH, MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


# ``examples`` (JSON Schema annotations: they change no validation) are where the examples
# of the OpenAPI document and /docs come from (examples.py), wherever a value made up from
# the type alone would read as nonsense (an id, an email, a sku, a time, a price).
TIMESTAMP: Schema = {
    "type": "string",
    "format": "date-time",
    "description": "RFC 3339, UTC",
    "examples": ["2026-05-04T09:30:00.000000Z"],
}
ID: Schema = {"type": "string", "minLength": 1, "maxLength": 64}


def id_of(prefix: str, example: str) -> Schema:
    """An id, with an example of the form the server gives this kind of object (ids are
    opaque: the form is for readers, not for clients to parse)."""
    return {**ID, "examples": [f"{prefix}_{example}"]}


USER_ID = id_of("usr", "01JV3Q6B2M8X4C5D7E9F0G1H2K")
PRODUCT_ID = id_of("prd", "01JV3Q7C4N9Y5D6E8F0G1H2J3M")
ORDER_ID = id_of("ord", "01JV3Q8Z5N4K7M2B9C6D1E0F3G")
PAYMENT_ID = id_of("pay", "01JV3Q9A6P5R8N3C0D7E2F1G4H")
REFUND_ID = id_of("ref", "01JV3QA1B7Q6S9P4D1E8F3G2J5")
AUDIT_ID = id_of("aud", "01JV3QB2C8R7T0Q5E2F9G4H3K6")
CLIENT_ID = id_of("cli", "01JV3QC3D9S8V1R6F3G0H5J4M7")
API_KEY_ID = id_of("key", "01JV3QC3D9S8V1R6F3G0H5J4M7")
# The objects a path names: /orders/{order_id} takes what an order's "id" is.
PATH_IDS: dict[str, Schema] = {
    "user_id": USER_ID,
    "product_id": PRODUCT_ID,
    "order_id": ORDER_ID,
    "client_id": CLIENT_ID,
    "key_id": API_KEY_ID,
}
AMOUNT: Schema = {
    "type": "integer",
    "minimum": 0,
    "maximum": MAX_AMOUNT,
    "description": "Minor units (cents).",
    "examples": [1299],
}
# The store's currency is configuration, so schemas name it with this placeholder and
# ``specialize`` puts the configured code in when an application is built.
CURRENCY: Schema = {"x-tillbox-placeholder": "store-currency"}
EMAIL_EXAMPLE = "kate@example.com"
EMAIL: Schema = {
    "type": "string",
    "minLength": 3,
    "maxLength": MAX_EMAIL_LENGTH,
    "format": "email",
    "examples": [EMAIL_EXAMPLE],
}
PASSWORD: Schema = {
    "type": "string",
    "minLength": MIN_PASSWORD_LENGTH,
    "maxLength": MAX_PASSWORD_LENGTH,
    "examples": ["plum harbour velvet kettle"],
}
ROLE: Schema = {"type": "string", "enum": ["customer", "staff", "admin"]}
STATUS: Schema = {"type": "string", "enum": ["active", "disabled"]}
SKU_EXAMPLE = "MUG-BLUE-350"
SKU: Schema = {
    "type": "string",
    "maxLength": 64,
    "pattern": "^[A-Za-z0-9][A-Za-z0-9._\\-]{0,63}$",
    "examples": [SKU_EXAMPLE],
}
# "Something other than white space": spelled out instead of \\S because Python's and
# ECMAScript's \\s differ (U+0085, U+001C-U+001F, U+FEFF), and clients validate with the latter.
_BLANK = "\\t\\n\\v\\f\\r \\u001c-\\u001f\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff"
NAME_EXAMPLE = "Blue mug, 350 ml"
NAME: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_NAME_LENGTH,
    "pattern": f"[^{_BLANK}]",
    "examples": [NAME_EXAMPLE],
}
DESCRIPTION_EXAMPLE = "Stoneware, dishwasher safe."
DESCRIPTION: Schema = {"type": "string", "maxLength": MAX_DESCRIPTION_LENGTH, "examples": [DESCRIPTION_EXAMPLE]}
STOCK: Schema = {"type": "integer", "minimum": 0, "maximum": MAX_STOCK, "examples": [25]}


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


REFUND_REASON_EXAMPLE = "Arrived chipped"
REFUND_FIELDS: dict[str, Schema] = {
    "id": REFUND_ID,
    "payment_id": PAYMENT_ID,
    "order_id": ORDER_ID,
    "amount": {**AMOUNT, "examples": [500]},
    "currency": CURRENCY,
    "reason": {"type": "string", "examples": [REFUND_REASON_EXAMPLE]},
    "status": {"type": "string", "enum": ["pending", "succeeded", "failed"], "examples": ["succeeded"]},
    "provider_reference": {
        "type": ["string", "null"],
        "description": "e.g. Stripe's refund id",
        "examples": ["re_3PqRsT2eZvKYlo2C0a1b2c3d"],
    },
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

# OAuth clients. The lists' items are checked by the domain (core/domain/oauth.py), which
# says what is wrong with each (a fragment, a wildcard, an unknown scope); the schemas
# bound their sizes.
CLIENT_NAME_EXAMPLE = "Back-office reports"
CLIENT_NAME: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_CLIENT_NAME_LENGTH,
    "pattern": f"[^{_BLANK}]",
    "examples": [CLIENT_NAME_EXAMPLE],
}
CLIENT_TYPE: Schema = {
    "type": "string",
    "enum": ["confidential", "public"],
    "description": "`confidential`: a server that keeps a secret; `public`: a browser or native app.",
}
REDIRECT_URIS: Schema = {
    "type": "array",
    "minItems": 1,
    "maxItems": MAX_REDIRECT_URIS,
    "items": {"type": "string", "minLength": 1, "maxLength": MAX_REDIRECT_URI_LENGTH},
    "description": "Absolute https URIs (http only on 127.0.0.1, [::1] or localhost), compared by exact string"
    " match: no fragment, no user name, no wildcard.",
    "examples": [["https://reports.example.com/oauth/callback"]],
}
GRANT_TYPES: Schema = {
    "type": "array",
    "minItems": 1,
    "maxItems": len(GrantType),
    "items": {"type": "string", "enum": [grant.value for grant in GrantType]},
    "description": "`refresh_token` needs `authorization_code`; `client_credentials` is for confidential clients.",
    "examples": [["authorization_code", "refresh_token"]],
}
CLIENT_SCOPES: Schema = {
    "type": "array",
    "minItems": 1,
    "maxItems": 50,
    "items": {"type": "string", "minLength": 1, "maxLength": 64},
    "description": "The most a token of the client may be given (see the scopes of each operation).",
    "examples": [["catalog:read", "orders:read"]],
}
CLIENT_STATUS: Schema = {"type": "string", "enum": ["active", "disabled"]}
CLIENT_SECRET_EXAMPLE = "tbcs_YW4gZXhhbXBsZSwgbm90IGEgcmVhbCBzZWNyZXQhIQ"  # noqa: S105 - for the docs, not a secret
CLIENT_FIELDS: dict[str, Schema] = {
    "id": CLIENT_ID,
    "name": {"type": "string", "examples": [CLIENT_NAME_EXAMPLE]},
    "type": CLIENT_TYPE,
    "redirect_uris": {"type": "array", "items": {"type": "string"}, "examples": REDIRECT_URIS["examples"]},
    "grant_types": {"type": "array", "items": GRANT_TYPES["items"], "examples": GRANT_TYPES["examples"]},
    "scopes": {"type": "array", "items": {"type": "string"}, "examples": CLIENT_SCOPES["examples"]},
    "status": CLIENT_STATUS,
    "secret_rotated_at": {
        **TIMESTAMP,
        "type": ["string", "null"],
        "description": "When the current secret was made; null for a public client.",
    },
    "created_at": TIMESTAMP,
    "updated_at": TIMESTAMP,
    "created_by": {
        "type": ["string", "null"],
        "description": "The admin who registered it; null: the operator at the command line.",
        "examples": USER_ID["examples"],
    },
}
CLIENT_REQUIRED = list(CLIENT_FIELDS)

# Resources (responses).
SCOPE: Schema = {"type": "string", "enum": list(SCOPES)}
API_KEY_SCOPES: Schema = {
    "type": "array",
    "items": SCOPE,
    "minItems": 1,
    "maxItems": len(SCOPES),
    "uniqueItems": True,
    "examples": [["catalog:read", "orders:read"]],
}
API_KEY_SECRET_EXAMPLE = "tbk_QW4gZXhhbXBsZSBrZXksIG5vdCBhIHJlYWwgb25lIQ"  # noqa: S105 - for the docs
API_KEY_NAME: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_API_KEY_NAME_LENGTH,
    "pattern": NAME["pattern"],
    "examples": ["Nightly stock export"],
}
API_KEY_FIELDS: dict[str, Schema] = {
    "id": API_KEY_ID,
    "user_id": USER_ID,
    "name": {"type": "string", "examples": API_KEY_NAME["examples"]},
    "scopes": {**API_KEY_SCOPES, "description": "What the key may be used for (narrowed to its owner's role)."},
    "created_at": TIMESTAMP,
    "expires_at": TIMESTAMP,
    "last_used_at": {
        **TIMESTAMP,
        "type": ["string", "null"],
        "description": "RFC 3339, UTC; to the minute (null: never used).",
    },
    "revoked_at": {**TIMESTAMP, "type": ["string", "null"], "description": "RFC 3339, UTC (null: not revoked)."},
}
API_KEY_REQUIRED = list(API_KEY_FIELDS)
REFRESH_TOKEN_EXAMPLE = "YW4gZXhhbXBsZSwgbm90IGEgcmVhbCB0b2tlbiE"  # noqa: S105 - for the docs, not a secret
COMPONENTS: dict[str, Schema] = {
    "Error": obj(
        {
            "error": obj(
                {
                    "code": {
                        "type": "string",
                        "description": "Stable, machine-readable.",
                        "examples": ["validation_failed"],
                    },
                    "message": {
                        "type": "string",
                        "description": "For humans.",
                        "examples": ["The request has invalid fields."],
                    },
                    "request_id": {
                        "type": "string",
                        "description": "As in the `X-Request-ID` header; the server's log has the same.",
                        "examples": ["5f0c9a1e2b7d000000002a"],
                    },
                    "timestamp": TIMESTAMP,
                    "details": {
                        "type": "object",
                        "description": "Context; `fields` for validation errors.",
                        "examples": [{"fields": {"items[0].quantity": "must be at least 1"}}],
                    },
                },
                ["code", "message", "request_id", "timestamp", "details"],
            )
        },
        ["error"],
    ),
    "ListMeta": obj(
        {
            "has_more": {"type": "boolean", "description": "Whether a next page exists.", "examples": [False]},
            "next_cursor": {
                "type": ["string", "null"],
                "description": "Pass as `cursor` for the next page; null on the last page.",
            },
        },
        ["has_more", "next_cursor"],
    ),
    "User": obj(
        {
            "id": USER_ID,
            "email": {"type": "string", "examples": [EMAIL_EXAMPLE]},
            "role": ROLE,
            "status": STATUS,
            "created_at": TIMESTAMP,
            "updated_at": TIMESTAMP,
        },
        ["id", "email", "role", "status", "created_at", "updated_at"],
    ),
    "Tokens": obj(
        {
            "access_token": {
                "type": "string",
                "description": "Send as `Authorization: Bearer <access_token>`.",
                "examples": ["eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0.eyJzdWIiOiJ1c3JfMDFKVjNRNkIyTSJ9.c2lnbmF0dXJl"],
            },
            "token_type": {"type": "string", "enum": ["Bearer"]},
            "expires_in": {
                "type": "integer",
                "description": "Seconds until the access token expires.",
                "examples": [900],
            },
            "refresh_token": {
                "type": "string",
                "description": "Single-use; each refresh returns a new one.",
                "examples": [REFRESH_TOKEN_EXAMPLE],
            },
        },
        ["access_token", "token_type", "expires_in", "refresh_token"],
    ),
    "Product": obj(
        {
            "id": PRODUCT_ID,
            "sku": {"type": "string", "examples": [SKU_EXAMPLE]},
            "name": {"type": "string", "examples": [NAME_EXAMPLE]},
            "description": {"type": "string", "examples": [DESCRIPTION_EXAMPLE]},
            "price": AMOUNT,
            "currency": CURRENCY,
            "stock": STOCK,
            "active": {"type": "boolean", "examples": [True]},
            "created_at": TIMESTAMP,
            "updated_at": TIMESTAMP,
        },
        ["id", "sku", "name", "description", "price", "currency", "stock", "active", "created_at", "updated_at"],
    ),
    "AuditEntry": obj(
        {
            "id": AUDIT_ID,
            "at": TIMESTAMP,
            "actor_id": {
                "type": ["string", "null"],
                "description": "null: the operator at the command line, or anonymous",
                "examples": USER_ID["examples"],
            },
            "action": {"type": "string", "examples": ["product.price_changed"]},
            "object_type": {"type": "string", "examples": ["product"]},
            "object_id": {"type": ["string", "null"], "examples": PRODUCT_ID["examples"]},
            "source_ip": {"type": ["string", "null"], "examples": ["203.0.113.7"]},
            "details": {
                "type": "object",
                "description": "Before and after, where they apply.",
                "examples": [{"before": 1299, "after": 1499}],
            },
        },
        ["id", "at", "actor_id", "action", "object_type", "object_id", "source_ip", "details"],
    ),
    "Order": obj(
        {
            "id": ORDER_ID,
            "customer_id": USER_ID,
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
                        "product_id": PRODUCT_ID,
                        "sku": {"type": "string", "examples": [SKU_EXAMPLE]},
                        "name": {"type": "string", "examples": [NAME_EXAMPLE]},
                        "unit_price": AMOUNT,
                        "quantity": {"type": "integer", "minimum": 1, "examples": [2]},
                        "line_total": {**AMOUNT, "examples": [2598]},
                    },
                    ["product_id", "sku", "name", "unit_price", "quantity", "line_total"],
                ),
            },
            "subtotal": {**AMOUNT, "examples": [2598]},
            "total": {**AMOUNT, "examples": [2598]},
            "amount_paid": {**AMOUNT, "examples": [0]},
            "amount_refunded": {**AMOUNT, "examples": [0]},
            "currency": CURRENCY,
            "created_at": TIMESTAMP,
            "updated_at": TIMESTAMP,
            "expires_at": {
                **TIMESTAMP,
                "type": ["string", "null"],
                "description": "null once partly paid",
                "examples": ["2026-05-04T10:00:00.000000Z"],
            },
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
            "id": PAYMENT_ID,
            "order_id": ORDER_ID,
            "method": {"type": "string", "enum": ["card", "manual"]},
            "provider": {"type": "string", "enum": ["stripe", "manual"]},
            "status": {
                "type": "string",
                "enum": ["requires_action", "processing", "succeeded", "failed", "canceled"],
                "examples": ["succeeded"],
            },
            "amount": {**AMOUNT, "examples": [2598]},
            "currency": CURRENCY,
            "provider_reference": {
                "type": ["string", "null"],
                "description": "e.g. Stripe's PaymentIntent id",
                "examples": ["pi_3PqRsT2eZvKYlo2C1x2y3z4w"],
            },
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
    "OAuthClient": obj(CLIENT_FIELDS, CLIENT_REQUIRED),
    "Authorization": obj(
        {
            "client_id": CLIENT_ID,
            "client_name": {
                "type": ["string", "null"],
                "description": "The app's name; null if it was removed since.",
                "examples": [CLIENT_NAME_EXAMPLE],
            },
            "scopes": {"type": "array", "items": {"type": "string"}, "examples": [["orders:read"]]},
            "granted_at": TIMESTAMP,
            "updated_at": TIMESTAMP,
        },
        ["client_id", "client_name", "scopes", "granted_at", "updated_at"],
        description="An app the user approved, with the scopes approved; taking it back ends the app's sessions.",
    ),
    "OAuthClientWithSecret": obj(
        {
            **CLIENT_FIELDS,
            "client_secret": {
                "type": "string",
                "description": "Confidential clients only. Shown this once: Tillbox keeps only a keyed digest.",
                "examples": [CLIENT_SECRET_EXAMPLE],
            },
        },
        CLIENT_REQUIRED,
        description="The client, with its new secret if it is confidential.",
    ),
    "ApiKey": obj(API_KEY_FIELDS, API_KEY_REQUIRED),
    "ApiKeyCreated": obj(
        {
            **API_KEY_FIELDS,
            "secret": {
                "type": "string",
                "description": "Send as `Authorization: Bearer <secret>`. Shown this once: it cannot be read again.",
                "examples": [API_KEY_SECRET_EXAMPLE],
            },
        },
        [*API_KEY_REQUIRED, "secret"],
    ),
    "Health": obj(
        {"status": {"type": "string", "examples": ["ok"]}, "checks": {"type": "object"}},
        ["status"],
    ),
}


def list_of(component: str) -> Schema:
    return obj({"data": {"type": "array", "items": ref(component)}, "meta": ref("ListMeta")}, ["data", "meta"])


# Request bodies.
CREDENTIALS = obj(
    {"email": EMAIL, "password": {"type": "string", "maxLength": 1024, "examples": PASSWORD["examples"]}},
    ["email", "password"],
)
REGISTER = obj({"email": EMAIL, "password": PASSWORD}, ["email", "password"])
REFRESH = obj(
    {"refresh_token": {"type": "string", "minLength": 1, "maxLength": 512, "examples": [REFRESH_TOKEN_EXAMPLE]}},
    ["refresh_token"],
)
CHANGE_PASSWORD = obj(
    {
        "current_password": {"type": "string", "maxLength": 1024, "examples": PASSWORD["examples"]},
        "new_password": {**PASSWORD, "examples": ["quiet lantern orchard mosaic"]},
    },
    ["current_password", "new_password"],
)
CREATE_API_KEY = obj(
    {
        "name": API_KEY_NAME,
        "scopes": API_KEY_SCOPES,
        "expires_in_days": {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_API_KEY_LIFETIME.days,
            "description": "Days until the key stops working.",
            "examples": [90],
        },
    },
    ["name", "scopes", "expires_in_days"],
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
        "delta": {
            "type": "integer",
            "minimum": -MAX_STOCK,
            "maximum": MAX_STOCK,
            "not": {"const": 0},
            "description": "Added to the stock (negative: taken away).",
            "examples": [-3],
        },
        "reason": {"type": "string", "maxLength": 500, "examples": ["Three broke in the warehouse"]},
    },
    ["delta"],
)

REGISTER_CLIENT = obj(
    {
        "name": CLIENT_NAME,
        "type": CLIENT_TYPE,
        "redirect_uris": REDIRECT_URIS,
        "grant_types": GRANT_TYPES,
        "scopes": CLIENT_SCOPES,
    },
    ["name", "type", "redirect_uris", "grant_types", "scopes"],
)
UPDATE_CLIENT = obj(
    {
        "name": CLIENT_NAME,
        "redirect_uris": REDIRECT_URIS,
        "grant_types": GRANT_TYPES,
        "scopes": CLIENT_SCOPES,
        "status": CLIENT_STATUS,
    },
    minProperties=1,
)

# Query parameters.
LIMIT: Schema = {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}
# Long enough for any cursor the store makes (one sorted by name carries the name: up to 200
# characters, JSON-escaped, base64-encoded).
CURSOR: Schema = {"type": "string", "minLength": 1, "maxLength": 2048}

# Orders and payments.
QUANTITY: Schema = {"type": "integer", "minimum": 1, "maximum": MAX_QUANTITY, "examples": [2]}
PLACE_ORDER = obj(
    {
        "items": {
            "type": "array",
            "minItems": 1,
            # The domain's limit, stated where the validator sees it first: a longer list
            # is refused before any line of it is looked at.
            "maxItems": MAX_LINES,
            "items": {
                "oneOf": [
                    obj({"product_id": PRODUCT_ID, "quantity": QUANTITY}, ["product_id", "quantity"], title="By id"),
                    obj({"sku": SKU, "quantity": QUANTITY}, ["sku", "quantity"], title="By sku"),
                ]
            },
            "examples": [
                [
                    {"product_id": PRODUCT_ID["examples"][0], "quantity": 2},
                    {"sku": "TEA-EARL-GREY-100G", "quantity": 1},
                ]
            ],
        }
    },
    ["items"],
)
CANCEL_ORDER = obj(
    {"reason": {"type": "string", "maxLength": MAX_REASON_LENGTH, "examples": ["Ordered the wrong colour"]}}
)
FULFIL_ORDER = obj({})
PAY = {
    "oneOf": [
        obj(
            {
                "method": {"const": "card"},
                "payment_method": {
                    "type": "string",
                    "maxLength": 203,
                    "pattern": "^pm_[A-Za-z0-9_]{1,200}$",
                    "description": "A Stripe PaymentMethod id, from Stripe.js or the mobile SDKs.",
                    "examples": ["pm_card_visa"],
                },
            },
            ["method", "payment_method"],
            title="Card",
            description="Charged through Stripe.",
        ),
        obj(
            {
                "method": {"const": "manual"},
                "reference": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_REFERENCE_LENGTH,
                    "description": "The receipt, transfer or invoice number.",
                    "examples": ["Cash, till 2, receipt 1042"],
                },
                "amount": {
                    **AMOUNT,
                    "minimum": 1,
                    "description": "Minor units; default: the balance due.",
                    "examples": [2598],
                },
            },
            ["method", "reference"],
            title="Manual (staff)",
            description="Cash, a bank transfer or an invoice, recorded by staff.",
        ),
    ]
}
REFUND = obj(
    {
        "amount": {
            **AMOUNT,
            "minimum": 1,
            "description": "Minor units; default: all that is still refundable.",
            "examples": [500],
        },
        "reason": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_REASON_LENGTH,
            "examples": [REFUND_REASON_EXAMPLE],
        },
    },
    ["reason"],
)

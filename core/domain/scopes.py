"""Scopes: what a delegated credential (an OAuth client's token, a personal API key) may be
used for, by area and action.

Every operation of the API names the one scope it needs. A scope only ever narrows: what
the caller's role allows is still checked by each use case against the account as it is
now (core/services/access.py), so a credential never does more than both its scopes and
its user's role allow. A first-party session (the API's own login, the console, the command
line) carries its role's full set.
"""

from __future__ import annotations

from collections.abc import Iterable

from core.domain.errors import Invalid
from core.domain.users import Role

#: The ``client_id`` of the tokens of Tillbox's own sign-in (API login, console).
FIRST_PARTY_CLIENT_ID = "tillbox"

#: Every scope, with the plain words a user reads on the authorization page.
SCOPES: dict[str, str] = {
    "catalog:read": "See the products, prices and stock",
    "catalog:write": "Create, change and delete products and adjust their stock",
    "orders:read": "See orders, with their payments and refunds",
    "orders:write": "Place, cancel and fulfil orders",
    "payments:write": "Pay for orders",
    "refunds:write": "Refund payments",
    "users:read": "See accounts",
    "users:write": "Change accounts",
    "audit:read": "Read the audit log",
    "webhooks:write": "Manage webhook endpoints",
    "clients:read": "See the apps and services connected to the shop",
    "clients:write": "Connect, change and disconnect apps and services",
}

_CUSTOMER = frozenset({"catalog:read", "orders:read", "orders:write", "payments:write", "users:read", "users:write"})
_STAFF = _CUSTOMER | {"catalog:write", "refunds:write"}

#: The scopes a role's work can need: a first-party session's set, and the most a delegated
#: credential of a user with that role can be given.
ROLE_SCOPES: dict[Role, frozenset[str]] = {
    Role.CUSTOMER: _CUSTOMER,
    Role.STAFF: frozenset(_STAFF),
    Role.ADMIN: frozenset(SCOPES),
}


def role_for(scopes: Iterable[str]) -> Role:
    """The least role whose work covers these scopes (what a client-credentials token's
    ``role`` claim says; the role it acts with is ``acting_role``, per operation)."""
    wanted = frozenset(scopes)
    return next(role for role in (Role.CUSTOMER, Role.STAFF, Role.ADMIN) if wanted <= ROLE_SCOPES[role])


def acting_role(scope: str) -> Role:
    """The role an OAuth client acting as itself has in an operation that needs ``scope``:
    staff's for what staff do (reading every order, writing the catalog, refunding), an
    admin's only for what only admins do. Per operation, never the widest of its scopes: a
    client given ``audit:read`` must not change accounts as an admin with ``users:write``
    (users:* are a customer's own account's scopes, so admin-only operations on accounts
    stay out of a client's reach)."""
    return Role.STAFF if scope in ROLE_SCOPES[Role.STAFF] else Role.ADMIN


def parse_scopes(text: str | Iterable[str]) -> frozenset[str]:
    """Scopes from a space-separated string (RFC 6749 §3.3) or a list; unknown ones refused."""
    names = text.split() if isinstance(text, str) else list(text)
    unknown = sorted({name for name in names if name not in SCOPES})
    if unknown:
        raise Invalid(f"Unknown scope: {', '.join(unknown)}.", code="invalid_scope", details={"unknown": unknown})
    return frozenset(names)


def format_scopes(scopes: Iterable[str]) -> str:
    """The space-separated form, in the order of SCOPES (stable for tokens and display)."""
    chosen = set(scopes)
    return " ".join(name for name in SCOPES if name in chosen)

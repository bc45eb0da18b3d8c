"""Every operation of the HTTP API, by area."""

from __future__ import annotations

from entrypoints.http.api import Api, Operation
from entrypoints.http.routes import admin, auth, clients, meta, oauth, orders, products, users, webhooks

APIS: tuple[Api, ...] = (
    auth.api,
    users.api,
    products.api,
    orders.api,
    webhooks.api,
    admin.api,
    clients.api,
    oauth.api,
    meta.api,
)


def all_operations() -> list[Operation]:
    return [op for api in APIS for op in api.operations]

"""Typed keys for per-request values and app-wide services."""

from __future__ import annotations

from aiohttp import web

from adapters.auth.tokens import KeyRing
from core.domain.users import Actor
from core.ports.identity import AccessTokenIssuer, KeyedDigest
from core.ports.payments import PaymentGateway
from core.ports.unit_of_work import UnitOfWorkFactory
from core.services.api_keys import ApiKeyService
from core.services.audit import AuditService
from core.services.auth import AuthService
from core.services.catalog import CatalogService
from core.services.clients import ClientService
from core.services.housekeeping import Housekeeping
from core.services.idempotency import IdempotencyService
from core.services.oauth import OAuthService
from core.services.orders import OrderService
from core.services.outbox import OutboxService
from core.services.payments import PaymentService
from entrypoints.http.docs import ApiReference
from entrypoints.http.oauth import OAuthServer
from entrypoints.http.representations import RenderedPages, RenderedProducts

ACTOR = web.RequestKey("actor", Actor)  # the caller; set by the authentication middleware
# The client's address, behind trusted proxies too (entrypoints.http.proxies); None on a Unix socket.
CLIENT_ADDRESS: web.RequestKey[str | None] = web.RequestKey("client_address")
REQUEST_ID = web.RequestKey("request_id", str)

# App-wide services, filled from the container at startup (see app.py).
AUTH = web.AppKey("auth", AuthService)
CATALOG = web.AppKey("catalog", CatalogService)
AUDIT = web.AppKey("audit", AuditService)
CLIENTS = web.AppKey("clients", ClientService)
OAUTH_SERVICE = web.AppKey("oauth_service", OAuthService)
OAUTH = web.AppKey("oauth", OAuthServer)  # the authorization server (entrypoints/http/oauth.py)
DIGESTS: web.AppKey[KeyedDigest] = web.AppKey("digests")  # the server key's HMAC: the consent ticket
API_KEYS = web.AppKey("api_keys", ApiKeyService)
ORDERS = web.AppKey("orders", OrderService)
PAYMENTS = web.AppKey("payments", PaymentService)
GATEWAY = web.AppKey("gateway", PaymentGateway)
IDEMPOTENCY = web.AppKey("idempotency", IdempotencyService)
HOUSEKEEPING = web.AppKey("housekeeping", Housekeeping)
OUTBOX = web.AppKey("outbox", OutboxService)
READY_CHECKS = web.AppKey("ready_checks", list)  # callables returning (name, detail) or raising
OPENAPI = web.AppKey("openapi", dict)
DOCS = web.AppKey("docs", ApiReference)  # /docs, rendered once per application
TOKENS = web.AppKey("access_tokens", AccessTokenIssuer)
# For the JWKS: the public keys that verify tokens now.
SIGNING_KEYS: web.AppKey[KeyRing] = web.AppKey("signing_keys")
RENDERED_PRODUCTS = web.AppKey("rendered_products", RenderedProducts)
RENDERED_PAGES = web.AppKey("rendered_pages", RenderedPages)
PUBLIC_MAX_AGE = web.AppKey("public_max_age", int)  # seconds: server.public_max_age
ISSUER = web.AppKey("issuer", str)  # auth.issuer: the tokens' iss, and the metadata's issuer when a URL
STORE = web.AppKey("store", UnitOfWorkFactory)  # for change_counter(): is what we rendered still current?

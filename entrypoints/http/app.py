"""The aiohttp application: ``create_app(container)``, and how a server process runs it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web

from adapters.auth.tokens import KeyRing
from core.ports.identity import KeyedDigest
from entrypoints.container import Container, disk_check, provide, start, stop
from entrypoints.http.connections import CONNECTION_LIMITS, MAX_HEADERS, ConnectionLimits
from entrypoints.http.docs import ApiReference
from entrypoints.http.keys import (
    API_KEYS,
    AUDIT,
    AUTH,
    CATALOG,
    CLIENTS,
    DIGESTS,
    DOCS,
    GATEWAY,
    HOUSEKEEPING,
    IDEMPOTENCY,
    ISSUER,
    OAUTH,
    OAUTH_SERVICE,
    OPENAPI,
    ORDERS,
    OUTBOX,
    PAYMENTS,
    PUBLIC_MAX_AGE,
    READY_CHECKS,
    RENDERED_PAGES,
    RENDERED_PRODUCTS,
    SIGNING_KEYS,
    STORE,
    TOKENS,
)
from entrypoints.http.middlewares import (
    cors_middleware,
    request_middleware,
)
from entrypoints.http.oauth import OAuthServer
from entrypoints.http.openapi import build_openapi
from entrypoints.http.proxies import TrustedProxies
from entrypoints.http.representations import RenderedPages, RenderedProducts
from entrypoints.http.routes import APIS, all_operations
from entrypoints.logs import AccessLog
from entrypoints.version import VERSION

log = logging.getLogger("tillbox.http")


def create_app(container: Container, *, access_log: AccessLog | None = None) -> web.Application:
    """Build the application. Nothing is opened here: resources start in cleanup_ctx."""
    config = container.config
    origins = config.server.cors_origins()
    # CORS outermost: a preflight needs no token, and every answer gets its headers.
    middlewares = [cors_middleware(origins)] if origins else []
    proxies = TrustedProxies(config.server.trusted_proxies(), config.server.proxy_header())
    middlewares.append(request_middleware(access_log, proxies))
    max_header_bytes = config.server.max_header_bytes()
    app = web.Application(
        client_max_size=config.server.max_body_bytes(),
        middlewares=middlewares,
        # aiohttp bounds each line of a header; the protocol bounds the whole block to
        # max_header_bytes (which no line can then be over) and answers in the envelope.
        handler_args={
            "max_line_size": max_header_bytes,
            "max_field_size": max_header_bytes,
            "max_headers": MAX_HEADERS,
            "keepalive_timeout": config.server.keepalive_timeout(),
        },
    )
    # Read deadlines, the header bound and the connection cap, which aiohttp has no option
    # for: kept by the protocol that entrypoints.http.connections.listening serves the app with.
    app[CONNECTION_LIMITS] = ConnectionLimits(
        header_timeout=config.server.header_timeout(),
        body_timeout=config.server.body_timeout(),
        max_connections=config.server.max_connections(),
        max_header_bytes=max_header_bytes,
    )
    currency = config.store.currency()
    for api in APIS:
        api.install(app, currency=currency)
    document = build_openapi(all_operations(), version=VERSION, currency=currency)
    app[OPENAPI] = document
    app[RENDERED_PRODUCTS] = RenderedProducts()
    app[RENDERED_PAGES] = RenderedPages()
    app[PUBLIC_MAX_AGE] = config.server.public_max_age()
    app[ISSUER] = config.auth.issuer()
    app[DOCS] = ApiReference(document)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        await start(container)
        try:
            app[AUTH] = await provide(container.auth_service)
            await app[AUTH].prepare()
            app[CATALOG] = await provide(container.catalog_service)
            app[AUDIT] = await provide(container.audit_service)
            app[CLIENTS] = await provide(container.client_service)
            app[OAUTH_SERVICE] = await provide(container.oauth_service)
            app[OAUTH] = OAuthServer(app[OAUTH_SERVICE], app[AUTH], app[CLIENTS])
            digests: KeyedDigest = await provide(container.request_digests)
            app[DIGESTS] = digests
            app[API_KEYS] = await provide(container.api_key_service)
            app[IDEMPOTENCY] = await provide(container.idempotency_service)
            app[ORDERS] = await provide(container.order_service)
            app[OUTBOX] = await provide(container.outbox_service)
            app[PAYMENTS] = await provide(container.payment_service)
            app[GATEWAY] = await provide(container.payment_gateway)
            app[TOKENS] = await provide(container.access_tokens)
            signing_keys: KeyRing = await provide(container.signing_keys)
            app[SIGNING_KEYS] = signing_keys
            app[HOUSEKEEPING] = await provide(container.housekeeping)
            database = await provide(container.database)
            app[STORE] = database
            data_dir: Path = container.data_dir()
            app[READY_CHECKS] = [("database", database.check_ready), ("disk", lambda: disk_check(data_dir))]
            yield
        finally:
            if OAUTH in app:
                app[OAUTH].close()
            if access_log is not None:
                access_log.flush()
            await stop(container)

    app.cleanup_ctx.append(resources)
    app.cleanup_ctx.append(maintenance())
    return app


def maintenance() -> Callable[[web.Application], AsyncIterator[None]]:
    """Runs the server's housekeeping (core/services/housekeeping.py says what and how often)."""

    async def housekeeping(app: web.Application) -> AsyncIterator[None]:
        chores = app[HOUSEKEEPING]

        async def loop() -> None:
            while True:
                await asyncio.sleep(chores.interval.total_seconds())
                for failure in await chores.run_round():
                    log.error(
                        "housekeeping job failed; trying again next round",
                        exc_info=failure.error,
                        extra={"fields": {"job": failure.job}},
                    )

        task = asyncio.create_task(loop(), name="tillbox-housekeeping")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return housekeeping

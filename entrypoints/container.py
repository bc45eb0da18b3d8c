"""The composition root: the only place that knows which adapter serves which port."""

from __future__ import annotations

import inspect
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TypeVar, cast

from dependency_injector import containers, providers

from adapters.auth.digest import KEY_BYTES, HmacDigest
from adapters.auth.keys import SigningKeys
from adapters.auth.opaque import Sha256OpaqueTokens
from adapters.auth.passwords import Argon2PasswordHasher
from adapters.auth.skeletons import Uts39Skeletons
from adapters.auth.tokens import JwtAccessTokens
from adapters.cache.throttle import DiskcacheThrottle
from adapters.clock import SystemClock
from adapters.ids import UlidIds
from adapters.payments.unconfigured import UnconfiguredPaymentGateway
from adapters.postgres import PostgresDatabase
from adapters.postgres.shared import PostgresSigningKeys, PostgresThrottle, load_secret
from adapters.sqlite.database import SqliteDatabase
from core.ports.clock import Clock
from core.ports.payments import PaymentGateway
from core.ports.unit_of_work import UnitOfWorkFactory
from core.services.api_keys import ApiKeyService
from core.services.audit import AuditService
from core.services.auth import AuthService, AuthSettings
from core.services.catalog import CatalogService
from core.services.clients import ClientService
from core.services.housekeeping import Housekeeping, HousekeepingSettings
from core.services.idempotency import IdempotencyService
from core.services.oauth import OAuthService
from core.services.orders import OrderService, OrderSettings
from core.services.outbox import OutboxService, OutboxSettings
from core.services.payments import PaymentService
from core.services.reports import ReportService
from entrypoints.settings import Settings, require_supported_store, uses_postgres

DATABASE_FILE = "tillbox.db"
T = TypeVar("T")


class DataDirError(Exception):
    """The data directory cannot be created or written."""


def migrate_store(settings: Settings, data_dir: Path) -> tuple[str, int]:
    """Apply pending migrations to the store the settings name: what it is (for the
    operator, without credentials) and its schema version."""
    if uses_postgres(settings):
        import asyncio

        from adapters.postgres import maintenance

        url = settings["database"]["url"]
        return maintenance.describe(url), asyncio.run(maintenance.migrate(url))
    from adapters.sqlite.migrations import migrate

    database = data_dir / DATABASE_FILE
    return f"database {database}", migrate(database, busy_timeout_ms=settings["database"]["busy_timeout_ms"])


def prepare_data_dir(directory: str) -> Iterator[Path]:
    """Create the data directory (0700) on first start and prove that it is writable."""
    path = Path(directory).expanduser().absolute()
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise DataDirError(f"cannot create data directory {path}: {e.strerror}") from None
    # Try it: os.access says yes to root even where the kernel will say no (read-only
    # mounts, immutable directories), and finding out at the first commit is too late.
    probe = path / f".write-test-{os.getpid()}"
    try:
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise DataDirError(f"data directory {path} is not writable: {e.strerror}") from None
    yield path


async def open_database(
    url: str,
    data_dir: Path,
    clock: Clock,
    pool_min: int,
    pool_max: int,
    busy_timeout_ms: int,
    read_budget_ms: int,
    slow_read_budget_ms: int,
) -> AsyncIterator[UnitOfWorkFactory]:
    """The store ``url`` names: PostgreSQL, or (empty) SQLite in the data directory."""
    database: SqliteDatabase | PostgresDatabase
    if url:
        database = PostgresDatabase(
            url,
            clock=clock,
            pool_min=pool_min,
            pool_max=pool_max,
            busy_timeout_ms=busy_timeout_ms,
            read_budget_ms=read_budget_ms,
            slow_read_budget_ms=slow_read_budget_ms,
        )
    else:
        database = SqliteDatabase(
            data_dir / DATABASE_FILE,
            clock=clock,
            busy_timeout_ms=busy_timeout_ms,
            read_budget_ms=read_budget_ms,
            slow_read_budget_ms=slow_read_budget_ms,
        )
    await database.open()
    try:
        yield database
    finally:
        await database.close()


def start_hasher(
    memory_kib: int, time_cost: int, parallelism: int, workers: int, hash_queue_limit: int, verify_queue_limit: int
) -> Iterator[Argon2PasswordHasher]:
    hasher = Argon2PasswordHasher(
        memory_kib=memory_kib,
        time_cost=time_cost,
        parallelism=parallelism,
        max_workers=workers,
        hash_queue_limit=hash_queue_limit,
        verify_queue_limit=verify_queue_limit,
    )
    try:
        yield hasher
    finally:
        hasher.close()


async def open_throttle(
    database: UnitOfWorkFactory, data_dir: Path, clock: SystemClock
) -> AsyncIterator[DiskcacheThrottle | PostgresThrottle]:
    """Counted by every instance in the PostgreSQL store; by every process of the machine in
    the data directory's diskcache otherwise."""
    if isinstance(database, PostgresDatabase):
        yield PostgresThrottle(database, clock=clock)
        return
    throttle = DiskcacheThrottle(data_dir / "cache" / "throttle", clock=clock)
    try:
        yield throttle
    finally:
        throttle.close()


async def open_request_digests(database: UnitOfWorkFactory, directory: Path) -> AsyncIterator[HmacDigest]:
    """Keyed by the store's secret on PostgreSQL (every instance digests alike), by the keys
    directory's file otherwise."""
    if isinstance(database, PostgresDatabase):
        yield HmacDigest(directory, key=await load_secret(database, "request-digest", KEY_BYTES))
        return
    digests = HmacDigest(directory)
    try:
        digests.load()
    except (OSError, ValueError) as e:
        raise DataDirError(str(e)) from None
    yield digests


async def open_signing_keys(
    database: UnitOfWorkFactory, directory: Path, clock: SystemClock
) -> AsyncIterator[SigningKeys | PostgresSigningKeys]:
    """In the PostgreSQL store, shared by every instance; in the keys directory otherwise."""
    if isinstance(database, PostgresDatabase):
        keys = PostgresSigningKeys(database, clock=clock)
        await keys.open()
        try:
            yield keys
        finally:
            await keys.close()
        return
    yield SigningKeys(directory, clock=clock)


async def open_payment_gateway(
    clock: SystemClock,
    currency: str,
    secret_key: str,
    webhook_secret: str,
    api_base: str,
    retry_attempts: int,
    timeout_seconds: int,
    breaker_threshold: int,
    breaker_reset_seconds: int,
) -> AsyncIterator[PaymentGateway]:
    """Stripe when a secret key is configured; otherwise a gateway that answers 503 to card
    payments while everything else works."""
    if not secret_key:
        yield UnconfiguredPaymentGateway()
        return
    from adapters.payments.stripe import StripePaymentGateway  # stripe costs ~100 ms to import: only when used

    gateway = StripePaymentGateway(
        secret_key=secret_key,
        api_base=api_base,
        webhook_secret=webhook_secret or None,
        currency=currency,
        clock=clock,
        retry_attempts=retry_attempts,
        breaker_threshold=breaker_threshold,
        breaker_reset_seconds=breaker_reset_seconds,
        timeout_seconds=timeout_seconds,
    )
    try:
        yield gateway
    finally:
        await gateway.close()


def disk_check(data_dir: Path, minimum_bytes: int = 64 * 1024 * 1024) -> dict[str, str]:
    """Refuse readiness before the disk is so full that commits would fail."""
    free = shutil.disk_usage(data_dir).free
    if free < minimum_bytes:
        raise RuntimeError(f"only {free // (1024 * 1024)} MiB free in {data_dir}")
    return {"disk": f"{free // (1024 * 1024)} MiB free"}


class Container(containers.DeclarativeContainer):
    config = providers.Configuration(strict=True)

    data_dir = providers.Resource(prepare_data_dir, config.data.dir)
    clock = providers.Singleton(SystemClock)
    ids = providers.Singleton(UlidIds)

    database = providers.Resource(
        open_database,
        url=config.database.url,
        data_dir=data_dir,
        clock=clock,
        pool_min=config.database.pool_min,
        pool_max=config.database.pool_max,
        busy_timeout_ms=config.database.busy_timeout_ms,
        read_budget_ms=config.database.read_budget_ms,
        slow_read_budget_ms=config.database.slow_read_budget_ms,
    )
    hasher = providers.Resource(
        start_hasher,
        memory_kib=config.auth.argon2_memory_kib,
        time_cost=config.auth.argon2_time_cost,
        parallelism=config.auth.argon2_parallelism,
        workers=config.auth.hash_workers,
        hash_queue_limit=config.auth.hash_queue_limit,
        verify_queue_limit=config.auth.verify_queue_limit,
    )
    keys_dir = providers.Callable(Path.joinpath, data_dir, "keys")
    signing_keys = providers.Resource(open_signing_keys, database=database, directory=keys_dir, clock=clock)
    request_digests = providers.Resource(open_request_digests, database=database, directory=keys_dir)
    skeletons = providers.Singleton(Uts39Skeletons)
    access_tokens = providers.Singleton(
        JwtAccessTokens,
        keys=signing_keys,
        issuer=config.auth.issuer,
        audience=config.auth.audience,
        ttl_seconds=config.auth.access_token_ttl,
        clock=clock,
    )
    opaque_tokens = providers.Singleton(Sha256OpaqueTokens)
    throttle = providers.Resource(open_throttle, database=database, data_dir=data_dir, clock=clock)

    auth_settings = providers.Singleton(
        AuthSettings,
        allow_registration=config.auth.allow_registration,
        refresh_token_ttl=providers.Factory(timedelta, seconds=config.auth.refresh_token_ttl),
        access_token_ttl=providers.Factory(timedelta, seconds=config.auth.access_token_ttl),
        login_failures_per_account=config.auth.login_failures_per_account,
        login_failures_per_ip=config.auth.login_failures_per_ip,
        login_window=providers.Factory(timedelta, seconds=config.auth.login_window),
        registrations_per_ip=config.auth.registrations_per_ip,
        registration_window=providers.Factory(timedelta, seconds=config.auth.registration_window),
    )
    api_key_service = providers.Singleton(
        ApiKeyService, uow=database, tokens=opaque_tokens, digests=request_digests, clock=clock, ids=ids
    )
    auth_service = providers.Singleton(
        AuthService,
        uow=database,
        hasher=hasher,
        access_tokens=access_tokens,
        opaque_tokens=opaque_tokens,
        throttle=throttle,
        skeletons=skeletons,
        clock=clock,
        ids=ids,
        settings=auth_settings,
        api_keys=api_key_service,
    )
    payment_gateway = providers.Resource(
        open_payment_gateway,
        clock=clock,
        currency=config.store.currency,
        secret_key=config.stripe.secret_key,
        webhook_secret=config.stripe.webhook_secret,
        api_base=config.stripe.api_base,
        retry_attempts=config.stripe.retry_attempts,
        timeout_seconds=config.stripe.timeout_seconds,
        breaker_threshold=config.stripe.breaker_threshold,
        breaker_reset_seconds=config.stripe.breaker_reset_seconds,
    )
    order_settings = providers.Singleton(
        OrderSettings,
        expiry=providers.Factory(timedelta, minutes=config.orders.expiry_minutes),
        customers_cancel_paid_card_orders=config.orders.customers_cancel_paid_card_orders,
    )
    order_service = providers.Singleton(
        OrderService,
        uow=database,
        gateway=payment_gateway,
        clock=clock,
        ids=ids,
        currency=config.store.currency,
        settings=order_settings,
    )
    payment_service = providers.Singleton(PaymentService, uow=database, gateway=payment_gateway, clock=clock, ids=ids)
    audit_service = providers.Singleton(AuditService, uow=database)
    # Client secrets are digested under the same server key as request fingerprints (each
    # with its own context: see core/services/clients.py), so on PostgreSQL every instance
    # checks them alike.
    client_service = providers.Singleton(
        ClientService,
        uow=database,
        opaque=opaque_tokens,
        digests=request_digests,
        clock=clock,
        ids=ids,
        sessions=auth_service,
    )
    oauth_service = providers.Singleton(
        OAuthService, uow=database, auth=auth_service, opaque_tokens=opaque_tokens, clock=clock, ids=ids
    )
    report_service = providers.Singleton(ReportService, uow=database, clock=clock, currency=config.store.currency)
    idempotency_service = providers.Singleton(IdempotencyService, uow=database, clock=clock, digests=request_digests)
    outbox_settings = providers.Singleton(
        OutboxSettings, retention=providers.Factory(timedelta, days=config.outbox.retention_days)
    )
    outbox_service = providers.Singleton(OutboxService, uow=database, clock=clock, settings=outbox_settings)
    catalog_service = providers.Singleton(
        CatalogService, uow=database, clock=clock, ids=ids, currency=config.store.currency
    )
    housekeeping = providers.Singleton(
        Housekeeping,
        orders=order_service,
        payments=payment_service,
        idempotency=idempotency_service,
        auth=auth_service,
        outbox=outbox_service,
        oauth=oauth_service,
        clock=clock,
        settings=providers.Singleton(
            HousekeepingSettings, interval=providers.Factory(timedelta, seconds=config.orders.expiry_check_seconds)
        ),
    )


async def provide(provider: Callable[[], T | Awaitable[T]]) -> T:
    """The object a provider gives. Providers that depend on an async resource are in
    dependency-injector's async mode and return an awaitable; the others do not."""
    result = provider()
    if inspect.isawaitable(result):
        return cast(T, await result)
    return result


async def start(container: Container) -> None:
    # The store first, alone: the resources that depend on it would otherwise start with it,
    # and when it cannot open, dependency-injector's callbacks of the others fail noisily
    # (InvalidStateError tracebacks) around the one line that says why.
    await provide(container.database)
    result = container.init_resources()
    if result is not None:
        await result


async def stop(container: Container) -> None:
    result = container.shutdown_resources()
    if result is not None:
        await result


def build_container(settings: Settings) -> Container:
    require_supported_store(settings)
    container = Container()
    container.config.from_dict(settings.values)
    return container

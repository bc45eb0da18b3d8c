"""The ``tillbox`` command line. Commands call services; errors are one line and exit 1,
usage errors exit 2 (argparse's convention)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import getpass
import logging
import os
import secrets
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from core.domain.errors import DomainError, Unavailable, UserEmailNotFound, ValidationFailed
from core.domain.pagination import MAX_LIMIT, PageRequest
from core.domain.users import Actor, Role, User, UserStatus
from core.services.auth import AuthService, CreateUser, ResetPassword, UpdateUser
from core.services.catalog import CatalogService, ImportProducts, ListProducts
from core.services.orders import ImportOrders
from entrypoints.datadir import DataDirInUse
from entrypoints.logs import configure_logging
from entrypoints.settings import (
    DEFAULTS,
    ConfigError,
    Settings,
    find_config,
    load_settings,
    require_supported_store,
    uses_postgres,
)
from entrypoints.version import COMMIT, VERSION

# The store's and the server's modules (entrypoints.container, entrypoints.server, the
# adapters) are imported by the commands that use them, not here: they are about half of
# the start-up, and `tillbox admin` shows its sign-in screen before it opens the store.
if TYPE_CHECKING:
    from entrypoints.container import Container

log = logging.getLogger("tillbox")
T = TypeVar("T")


class CommandError(Exception):
    """A failure to report as one line, without a traceback."""


def _fail(message: str) -> NoReturn:
    print(f"tillbox: error: {message}", file=sys.stderr)
    raise SystemExit(1)


# Shared plumbing.
def _settings(args: argparse.Namespace, flags: dict[tuple[str, str], Any] | None = None) -> Settings:
    settings = load_settings(find_config(args.config, os.environ), os.environ, flags)
    if args.opens_store:
        require_supported_store(settings)  # before anything is created or opened
    return settings


def _run_with_container(settings: Settings, work: Callable[[Container], Awaitable[Any]]) -> Any:
    """Run a command's work with the services, holding the data directory like a server
    does, so that ``restore`` and ``db reset`` never pull the database from under it."""
    from entrypoints.container import build_container, start, stop
    from entrypoints.datadir import serving

    async def main() -> Any:
        container = build_container(settings)
        await start(container)
        try:
            return await work(container)
        finally:
            await stop(container)

    with serving(_data_dir(settings)):
        return asyncio.run(main())


# Commands.
def cmd_serve(args: argparse.Namespace) -> None:
    from entrypoints.server import serve

    settings = _settings(
        args, {("server", "host"): args.host, ("server", "port"): args.port, ("server", "workers"): args.workers}
    )
    configure_logging(settings["log"]["level"])
    serve(settings)


def cmd_admin(args: argparse.Namespace) -> None:
    from entrypoints.console.run import run_console

    run_console(_settings(args))


def cmd_db_migrate(args: argparse.Namespace) -> None:
    from entrypoints.container import migrate_store

    settings = _settings(args)
    described, version = migrate_store(settings, _data_dir(settings))
    print(f"{described} is at schema version {version}")


#: Products per import and orders per import: one unit of work each, large enough that
#: a million of either takes minutes (a transaction's fixed cost, and on PostgreSQL a
#: round trip, per batch rather than per row), small enough that a server sharing the
#: store waits at most a fraction of a second for one.
PRODUCT_BATCH = 5000
ORDER_BATCH = 2000
#: The demo orders are of the first this many active products of the catalog.
ORDER_PRODUCTS = 10_000


#: How long one import is tried again while the store is away (a database server restarting).
SEED_RETRY_SECONDS = 120.0


async def _again_while_away(call: Callable[[], Awaitable[T]], *, seconds: float = SEED_RETRY_SECONDS) -> T:
    """``call()``, again while the store answers that it cannot be reached or is busy: a
    seed of millions takes minutes, and a database server may restart meanwhile. Such a
    unit of work was rolled back, so it runs again whole. Not after ``commit_failed``: the
    connection went during the commit, and whether the import was kept is not known."""
    deadline = asyncio.get_running_loop().time() + seconds
    delay = 0.25
    while True:
        try:
            return await call()
        except Unavailable as exc:
            if exc.code not in ("database_unavailable", "database_busy"):
                raise
            if asyncio.get_running_loop().time() + delay > deadline:
                raise
            log.warning("the store is away; the import runs again", extra={"fields": {"code": exc.code}})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def _batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@contextlib.contextmanager
def _progress() -> Iterator[Any]:
    """A progress bar on standard error when it is a terminal; nothing otherwise (a log or
    a pipe gets the one-line summary only)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), disable=not sys.stderr.isatty()) as progress:
        yield progress


async def _demo_customers(auth: AuthService) -> list[str]:
    """The ids of the demo customers, created the first time with a random password that is
    never shown (``tillbox users reset-password`` gives one a known one)."""
    from entrypoints.demo import DEMO_CUSTOMERS

    operator = Actor.operator()
    ids = []
    for email in DEMO_CUSTOMERS:
        try:
            user = await auth.get_user_by_email(operator, email)
        except UserEmailNotFound:
            password = secrets.token_urlsafe(24)
            user = await auth.create_user(CreateUser(actor=operator, email=email, password=password))
        ids.append(user.id)
    return ids


async def _products_to_order(catalog: CatalogService) -> list[tuple[str, int]]:
    """The id and price of the first ORDER_PRODUCTS active products of the catalog."""
    operator = Actor.operator()
    found: list[tuple[str, int]] = []
    after = None
    while len(found) < ORDER_PRODUCTS:
        page = await catalog.list_products(
            ListProducts(actor=operator, page=PageRequest(limit=MAX_LIMIT, after=after), active=True)
        )
        found += [(product.id, product.price.amount) for product in page.items]
        if page.next_after is None:
            break
        after = page.next_after
    return found[:ORDER_PRODUCTS]


def cmd_db_seed(args: argparse.Namespace) -> None:
    from entrypoints.container import provide
    from entrypoints.demo import DEMO_CUSTOMERS, demo_orders, demo_products

    settings = _settings(args)
    if args.count < 0 or args.orders < 0:
        raise CommandError("--count and --orders must be 0 or more")
    expiry = timedelta(minutes=settings["orders"]["expiry_minutes"])

    async def seed(container: Container) -> tuple[int, int, int]:
        catalog = await provide(container.catalog_service)
        operator = Actor.operator()
        created = skipped = placed = 0
        with _progress() as progress:
            task = progress.add_task("products", total=args.count)
            for batch in _batches(demo_products(args.count), PRODUCT_BATCH):
                command = ImportProducts(actor=operator, products=batch)
                imported = await _again_while_away(functools.partial(catalog.import_products, command))
                created += imported.created
                skipped += len(imported.skipped)
                progress.advance(task, len(batch))
            if args.orders:
                orders = await provide(container.order_service)
                products = await _products_to_order(catalog)
                if not products:
                    raise CommandError("the catalog has no active product to order; seed products first (--count)")
                customers = await _demo_customers(await provide(container.auth_service))
                # Ending an expiry ago (and a minute), so that the oldest statuses are all reachable.
                until = datetime.now(UTC) - expiry - timedelta(minutes=1)
                task = progress.add_task("orders", total=args.orders)
                history = demo_orders(args.orders, customers, products, until=until)
                for past in _batches(history, ORDER_BATCH):
                    done = ImportOrders(actor=operator, orders=past)
                    placed += len(await _again_while_away(functools.partial(orders.import_orders, done)))
                    progress.advance(task, len(past))
        return created, skipped, placed

    created, skipped, placed = _run_with_container(settings, seed)
    line = f"seeded {created} products ({skipped} already there)"
    if args.orders:
        line += f" and {placed} orders of {len(DEMO_CUSTOMERS)} demo customers"
    print(line)


def _data_dir(settings: Settings) -> Path:
    from entrypoints.container import prepare_data_dir

    return next(prepare_data_dir(settings["data"]["dir"]))


def _confirm(args: argparse.Namespace, question: str) -> None:
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise CommandError("refusing without confirmation; pass --yes")
    if input(f"{question} [y/N] ").strip().lower() not in {"y", "yes"}:
        raise CommandError("cancelled")


def cmd_db_reset(args: argparse.Namespace) -> None:
    from adapters.sqlite.migrations import migrate
    from entrypoints.container import DATABASE_FILE
    from entrypoints.datadir import exclusive

    settings = _settings(args)
    data_dir = _data_dir(settings)
    if uses_postgres(settings):
        from adapters.postgres import maintenance

        url = settings["database"]["url"]
        where = maintenance.describe(url)
        _confirm(args, f"Delete every account, product and order in the {where} (stop every server first)?")
        version = asyncio.run(maintenance.reset(url))
        print(f"{where} is empty, at schema version {version}")
        return
    database = data_dir / DATABASE_FILE
    with exclusive(data_dir):
        _confirm(args, f"Delete every account, product and order in {database}?")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
        version = migrate(database)
    print(f"database {database} is empty, at schema version {version}")


def cmd_backup(args: argparse.Namespace) -> None:
    from entrypoints.backups import back_up

    print(back_up(_settings(args), Path(args.path), overwrite=args.force))


def cmd_restore(args: argparse.Namespace) -> None:
    from adapters.sqlite.maintenance import inspect, restore
    from entrypoints.container import DATABASE_FILE
    from entrypoints.datadir import exclusive

    settings = _settings(args)
    source = Path(args.path)
    if uses_postgres(settings):
        from adapters.postgres import maintenance

        url = settings["database"]["url"]
        where = maintenance.describe(url)
        _confirm(args, f"Replace the {where} with {source} (stop every server first)?")
        info = maintenance.restore(source, url)
        print(f"restored {source} into the {where} (schema version {info.schema_version})")
        return
    inspect(source)  # refuse a bad file before touching (or even creating) anything
    data_dir = _data_dir(settings)
    database = data_dir / DATABASE_FILE
    with exclusive(data_dir):
        if database.exists():
            _confirm(args, f"Replace {database} with {source}?")
        info = restore(source, database, busy_timeout_ms=settings["database"]["busy_timeout_ms"])
    print(f"restored {source} into {database} (schema version {info.schema_version})")


def cmd_users_list(args: argparse.Namespace) -> None:
    from core.ports.repositories import UserFilter
    from core.services.auth import ListUsers
    from entrypoints.container import provide

    settings = _settings(args)

    async def list_all(container: Container) -> list[Any]:
        auth = await provide(container.auth_service)
        users: list[Any] = []
        after = None
        while True:
            page = await auth.list_users(
                ListUsers(
                    actor=Actor.operator(),
                    page=PageRequest(limit=100, after=after),
                    filter=UserFilter(role=Role(args.role) if args.role else None),
                )
            )
            users += page.items
            if page.next_after is None:
                return users
            after = page.next_after

    users = _run_with_container(settings, list_all)
    if args.json:
        from adapters.serialization import to_json, to_wire

        sys.stdout.write(to_json(to_wire(users)).decode() + "\n")
        return
    print(f"{'id':<30}  {'email':<40}  {'role':<8}  {'status':<8}  created")
    for user in users:
        created = user.created_at.strftime("%Y-%m-%d %H:%M")
        print(f"{user.id:<30}  {user.email:<40}  {user.role.value:<8}  {user.status.value:<8}  {created}")


def _change_user(args: argparse.Namespace, change: Callable[[AuthService, User], Awaitable[User]]) -> tuple[User, User]:
    """Find the account named by ``--email`` and change it: the account before and after."""
    from entrypoints.container import provide

    settings = _settings(args)

    async def work(container: Container) -> tuple[User, User]:
        auth = await provide(container.auth_service)
        before = await auth.get_user_by_email(Actor.operator(), args.email)
        return before, await change(auth, before)

    result: tuple[User, User] = _run_with_container(settings, work)
    return result


def _set_status(args: argparse.Namespace, status: UserStatus) -> tuple[User, User]:
    return _change_user(
        args, lambda auth, user: auth.update_user(UpdateUser(actor=Actor.operator(), user_id=user.id, status=status))
    )


def cmd_users_disable(args: argparse.Namespace) -> None:
    before, user = _set_status(args, UserStatus.DISABLED)
    if before.status is UserStatus.DISABLED:
        print(f"{user.email} ({user.id}) was already disabled")
    else:
        print(f"disabled {user.email} ({user.id}); their sessions are ended")


def cmd_users_enable(args: argparse.Namespace) -> None:
    before, user = _set_status(args, UserStatus.ACTIVE)
    if before.status is UserStatus.ACTIVE:
        print(f"{user.email} ({user.id}) was already active")
    else:
        print(f"enabled {user.email} ({user.id}); they can log in again")


def cmd_users_set_role(args: argparse.Namespace) -> None:
    role = Role(args.role)
    before, user = _change_user(
        args, lambda auth, user: auth.update_user(UpdateUser(actor=Actor.operator(), user_id=user.id, role=role))
    )
    if before.role is role:
        print(f"{user.email} ({user.id}) was already {role.value}")
    else:
        print(f"{user.email} ({user.id}) is now {user.role.value} (was {before.role.value})")


def cmd_users_reset_password(args: argparse.Namespace) -> None:
    from entrypoints.container import provide

    settings = _settings(args)

    async def find(container: Container) -> User:
        auth = await provide(container.auth_service)
        return await auth.get_user_by_email(Actor.operator(), args.email)

    # The account first, so that a mistyped email is refused before anyone types a
    # password; the password between the two runs, so that Ctrl-C at the prompt is an
    # interrupt and not a cancellation the event loop would hold until Enter.
    user: User = _run_with_container(settings, find)
    password = _read_password(args, "New password: ")

    async def reset(container: Container) -> User:
        auth = await provide(container.auth_service)
        return await auth.reset_password(ResetPassword(actor=Actor.operator(), user_id=user.id, new_password=password))

    user = _run_with_container(settings, reset)
    print(f"reset the password of {user.email} ({user.id}); their sessions are ended")


def cmd_keys_rotate(args: argparse.Namespace) -> None:
    from entrypoints.container import provide

    settings = _settings(args)

    async def rotate(container: Container) -> str:
        auth = await provide(container.auth_service)
        return await auth.rotate_signing_key(Actor.operator())

    kid = _run_with_container(settings, rotate)
    ttl = settings["auth"]["access_token_ttl"]
    print(f"new signing key {kid}; tokens signed with the old key keep working for up to {ttl} s")


def _key_scopes(values: Sequence[str]) -> tuple[str, ...]:
    """``--scope`` given several times, or once with the scopes space-separated, or both."""
    return tuple(name for value in values for name in value.split())


def cmd_keys_api_create(args: argparse.Namespace) -> None:
    from core.services.api_keys import CreateApiKey
    from entrypoints.container import provide

    settings = _settings(args)

    async def create(container: Container) -> Any:
        auth = await provide(container.auth_service)
        owner = await auth.get_user_by_email(Actor.operator(), args.user)
        keys = await provide(container.api_key_service)
        return await keys.create(
            CreateApiKey(
                actor=Actor.operator(),
                user_id=owner.id,
                name=args.name,
                scopes=_key_scopes(args.scope),
                expires_in=timedelta(days=args.expires_in),
            )
        )

    new = _run_with_container(settings, create)
    if args.json:
        from adapters.serialization import to_json, to_wire

        sys.stdout.write(to_json({**to_wire(new.key), "secret": new.secret}).decode() + "\n")
        return
    expires = new.key.expires_at.strftime("%Y-%m-%d %H:%M UTC")
    print(f"created API key {new.key.id} ({new.key.name!r}) for {args.user}, expires {expires}")
    print(f"scopes: {' '.join(_in_scope_order(new.key.scopes))}")
    print(new.secret)
    print("This secret will not be shown again: store it now (send it as Authorization: Bearer <secret>).")


def _in_scope_order(scopes: Iterable[str]) -> list[str]:
    from core.domain.scopes import SCOPES

    chosen = set(scopes)
    return [name for name in SCOPES if name in chosen]


def cmd_keys_api_list(args: argparse.Namespace) -> None:
    from core.services.api_keys import ListApiKeys
    from entrypoints.container import provide

    settings = _settings(args)

    async def list_all(container: Container) -> tuple[list[Any], dict[str, str]]:
        auth = await provide(container.auth_service)
        keys = await provide(container.api_key_service)
        user_id = None
        if args.user is not None:
            user_id = (await auth.get_user_by_email(Actor.operator(), args.user)).id
        found: list[Any] = []
        after = None
        while True:
            page = await keys.list(
                ListApiKeys(
                    actor=Actor.operator(),
                    page=PageRequest(limit=MAX_LIMIT, after=after),
                    user_id=user_id,
                    every_user=user_id is None,
                )
            )
            found += page.items
            if page.next_after is None:
                break
            after = page.next_after
        emails: dict[str, str] = {}
        for owner_id in {key.user_id for key in found}:
            emails[owner_id] = (await auth.get_user(Actor.operator(), owner_id)).email
        return found, emails

    keys, emails = _run_with_container(settings, list_all)
    if args.json:
        from adapters.serialization import to_json, to_wire

        sys.stdout.write(to_json(to_wire(keys)).decode() + "\n")
        return
    now = datetime.now(UTC)
    print(f"{'id':<30}  {'owner':<30}  {'name':<24}  {'state':<8}  {'expires':<16}  {'last used':<16}  scopes")
    for key in keys:
        state = "revoked" if key.revoked_at is not None else "expired" if key.expires_at <= now else "active"
        used = key.last_used_at.strftime("%Y-%m-%d %H:%M") if key.last_used_at else "never"
        print(
            f"{key.id:<30}  {emails[key.user_id]:<30}  {key.name:<24}  {state:<8}"
            f"  {key.expires_at.strftime('%Y-%m-%d %H:%M'):<16}  {used:<16}  {' '.join(_in_scope_order(key.scopes))}"
        )


def cmd_keys_api_revoke(args: argparse.Namespace) -> None:
    from core.services.api_keys import RevokeApiKey
    from entrypoints.container import provide

    settings = _settings(args)

    async def revoke(container: Container) -> Any:
        keys = await provide(container.api_key_service)
        return await keys.revoke(RevokeApiKey(actor=Actor.operator(), key_id=args.key_id))

    key = _run_with_container(settings, revoke)
    print(f"revoked API key {key.id} ({key.name!r}); it is refused from the next request on")


def cmd_openapi(args: argparse.Namespace) -> None:
    from adapters.serialization import to_json
    from entrypoints.http.openapi import build_openapi
    from entrypoints.http.routes import all_operations

    settings = _settings(args)
    document = build_openapi(all_operations(), version=VERSION, currency=settings["store"]["currency"])
    sys.stdout.write(to_json(document).decode() + "\n")


def cmd_config_show(args: argparse.Namespace) -> None:
    from entrypoints.settings import describe_settings

    print("\n".join(describe_settings(_settings(args))))


def _read_password(args: argparse.Namespace, prompt: str = "Password: ") -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise CommandError("no password on standard input")
        return password
    if not sys.stdin.isatty():
        raise CommandError("no terminal to ask for the password; use --password-stdin")
    first = getpass.getpass(prompt)
    if first != getpass.getpass("Repeat it: "):
        raise CommandError("the passwords differ")
    return first


def cmd_users_create(args: argparse.Namespace) -> None:
    from entrypoints.container import provide

    settings = _settings(args)
    password = _read_password(args)

    async def create(container: Container) -> Any:
        auth = await provide(container.auth_service)
        return await auth.create_user(
            CreateUser(actor=Actor.operator(), email=args.email, password=password, role=Role(args.role))
        )

    user = _run_with_container(settings, create)
    print(f"created {user.role.value} {user.email} ({user.id})")


# OAuth clients.
def _client_service(container: Container) -> Awaitable[Any]:
    from entrypoints.container import provide

    return provide(container.client_service)


def _print_json(data: Any) -> None:
    from adapters.serialization import to_json

    sys.stdout.write(to_json(data).decode() + "\n")


def _client_wire(client: Any, secret: str | None = None) -> dict[str, Any]:
    """A client as the API shows it (never its secret's digest), with its new secret if given."""
    from adapters.serialization import to_wire

    wire: dict[str, Any] = to_wire(client)
    if secret is not None:
        wire["client_secret"] = secret
    return wire


def _print_secret(client_id: str, secret: str, *, as_json: bool) -> None:
    if not as_json:
        print(f"client secret: {secret}")
    # On standard error with --json, so that the JSON stays the whole of standard output.
    print(
        "This secret will not be shown again: store it now (Tillbox keeps only a digest of it;"
        f" `tillbox clients rotate-secret {client_id}` makes a new one).",
        file=sys.stderr if as_json else sys.stdout,
    )


def _print_client(client: Any) -> None:
    rotated = client.secret_rotated_at.strftime("%Y-%m-%d %H:%M") if client.secret_rotated_at else "-"
    rows = [
        ("id", client.id),
        ("name", client.name),
        ("type", client.type.value),
        ("status", client.status.value),
        ("redirect uris", " ".join(client.redirect_uris)),
        ("grant types", " ".join(g.value for g in client.grant_types)),
        ("scopes", " ".join(client.scopes)),
        ("secret made", rotated),
        ("created", client.created_at.strftime("%Y-%m-%d %H:%M")),
        ("created by", client.created_by or "the operator"),
    ]
    for label, value in rows:
        print(f"{label + ':':<15}{value}")


def cmd_clients_create(args: argparse.Namespace) -> None:
    from core.domain.oauth import ClientType, GrantType
    from core.services.clients import RegisterClient

    settings = _settings(args)
    # --scope repeats, and each may hold several, space-separated (RFC 6749's form).
    scopes = tuple(name for value in args.scope for name in value.split())

    async def register(container: Container) -> Any:
        service = await _client_service(container)
        return await service.register(
            RegisterClient(
                actor=Actor.operator(),
                name=args.name,
                type=ClientType(args.type),
                redirect_uris=tuple(args.redirect_uri),
                grant_types=tuple(GrantType(g) for g in args.grant),
                scopes=scopes,
            )
        )

    made = _run_with_container(settings, register)
    client = made.client
    if args.json:
        _print_json(_client_wire(client, made.secret))
    else:
        print(f"registered {client.type.value} client {client.name} ({client.id})")
    if made.secret is not None:
        _print_secret(client.id, made.secret, as_json=args.json)


def cmd_clients_list(args: argparse.Namespace) -> None:
    from core.domain.oauth import ClientStatus
    from core.ports.repositories import OAuthClientFilter
    from core.services.clients import ListClients

    settings = _settings(args)

    async def list_all(container: Container) -> list[Any]:
        service = await _client_service(container)
        clients: list[Any] = []
        after = None
        while True:
            page = await service.list_clients(
                ListClients(
                    actor=Actor.operator(),
                    page=PageRequest(limit=MAX_LIMIT, after=after),
                    filter=OAuthClientFilter(status=ClientStatus(args.status) if args.status else None),
                )
            )
            clients += page.items
            if page.next_after is None:
                return clients
            after = page.next_after

    clients = _run_with_container(settings, list_all)
    if args.json:
        _print_json([_client_wire(client) for client in clients])
        return
    print(f"{'id':<30}  {'name':<32}  {'type':<12}  {'status':<8}  created")
    for client in clients:
        created = client.created_at.strftime("%Y-%m-%d %H:%M")
        print(f"{client.id:<30}  {client.name:<32}  {client.type.value:<12}  {client.status.value:<8}  {created}")


def cmd_clients_show(args: argparse.Namespace) -> None:
    settings = _settings(args)

    async def show(container: Container) -> Any:
        return await (await _client_service(container)).get_client(Actor.operator(), args.id)

    client = _run_with_container(settings, show)
    if args.json:
        _print_json(_client_wire(client))
    else:
        _print_client(client)


def _set_client_status(args: argparse.Namespace, disable: bool) -> tuple[Any, Any]:
    """The client before and after."""
    settings = _settings(args)

    async def work(container: Container) -> tuple[Any, Any]:
        service = await _client_service(container)
        before = await service.get_client(Actor.operator(), args.id)
        change = service.disable if disable else service.enable
        return before, await change(Actor.operator(), args.id)

    result: tuple[Any, Any] = _run_with_container(settings, work)
    return result


def cmd_clients_disable(args: argparse.Namespace) -> None:
    before, client = _set_client_status(args, disable=True)
    if not before.is_active:
        print(f"{client.name} ({client.id}) was already disabled")
    else:
        print(f"disabled {client.name} ({client.id}); its secret no longer authenticates it")


def cmd_clients_enable(args: argparse.Namespace) -> None:
    before, client = _set_client_status(args, disable=False)
    if before.is_active:
        print(f"{client.name} ({client.id}) was already active")
    else:
        print(f"enabled {client.name} ({client.id})")


def cmd_clients_rotate_secret(args: argparse.Namespace) -> None:
    settings = _settings(args)

    async def rotate(container: Container) -> Any:
        return await (await _client_service(container)).rotate_secret(Actor.operator(), args.id)

    made = _run_with_container(settings, rotate)
    client = made.client
    if args.json:
        _print_json(_client_wire(client, made.secret))
    else:
        print(f"new secret for {client.name} ({client.id}); the old one no longer works")
    _print_secret(client.id, made.secret, as_json=args.json)


def _version_text() -> str:
    return f"tillbox {VERSION}" + (f" (commit {COMMIT})" if COMMIT else "")


def cmd_version(args: argparse.Namespace) -> None:
    print(_version_text())


# The parser.
class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Examples keep their lines, and every option shows its default: an option that has
    none (``None``: the setting or "all" applies, as its help says) or an on/off flag
    (``False``) has nothing to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


_EXIT_STATUS = """exit status:
  0  done
  1  an error, told in one line on standard error ("tillbox: error: ...")
  2  a usage error: an unknown command or option, a missing or malformed value"""


def _command(
    subparsers: Any,
    name: str,
    handler: Callable[[argparse.Namespace], None],
    help: str,
    example: str,
    *,
    opens_store: bool = True,
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help, description=help, epilog=f"example:\n  {example}", formatter_class=_Formatter
    )
    parser.set_defaults(handler=handler, opens_store=opens_store)
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="settings file (default: $TILLBOX_CONFIG, else ./config.toml if present, else the built-in defaults)",
    )
    return parser


def _group(subparsers: Any, name: str, help: str) -> Any:
    """A command with commands of its own (``tillbox users ...``); alone, it shows its help."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help, description=help[0].upper() + help[1:] + ".", formatter_class=_Formatter
    )
    parser.set_defaults(handler=None, group=parser)
    return parser.add_subparsers(title="commands", metavar="COMMAND")


def _setting(section: str, key: str) -> str:
    return f"(default: the {section}.{key} setting, {DEFAULTS[section][key]} unless configured)"


_ROLES = [r.value for r in Role]


def _email_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--email", required=True, help="the account's email address (any case)")


def _password_stdin_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input instead of asking twice on the terminal",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tillbox",
        description="Tillbox: a self-hosted commerce backend in one file.",
        epilog=f"example:\n  tillbox serve --port 8080\n\nEvery command has --help.\n\n{_EXIT_STATUS}",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=_version_text(), help="print the version and exit")
    parser.set_defaults(group=parser)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    serve = _command(commands, "serve", cmd_serve, "run the HTTP API", "tillbox serve --host 0.0.0.0 --port 8080")
    serve.add_argument("--host", help=f"address to listen on {_setting('server', 'host')}")
    serve.add_argument(
        "--port", type=int, help=f"port to listen on; 0: a free one, named in the log {_setting('server', 'port')}"
    )
    serve.add_argument(
        "--workers", type=int, metavar="N", help=f"server processes sharing the port {_setting('server', 'workers')}"
    )

    _command(
        commands,
        "admin",
        cmd_admin,
        "the admin console in the terminal: orders, products, users, audit log (staff and admins sign in)",
        "tillbox admin --config /etc/tillbox/config.toml",
    )

    db_commands = _group(commands, "db", "manage the database")
    _command(db_commands, "migrate", cmd_db_migrate, "apply pending schema migrations", "tillbox db migrate")
    seed = _command(
        db_commands,
        "seed",
        cmd_db_seed,
        "add a demo catalog and, with --orders, a history of demo orders (products already there are skipped)",
        "tillbox db seed --count 1000000 --orders 1000000",
    )
    seed.add_argument("--count", type=int, metavar="N", default=1000, help="number of demo products (0: none)")
    seed.add_argument(
        "--orders",
        type=int,
        metavar="N",
        default=0,
        help="number of demo orders of the past year, placed by 5 demo customers, fulfilled, paid, cancelled,"
        " expired or refunded, of the catalog's first 10,000 active products",
    )
    reset = _command(
        db_commands,
        "reset",
        cmd_db_reset,
        "delete everything and start with an empty database",
        "tillbox db reset --yes",
    )
    reset.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    user_commands = _group(commands, "users", "manage accounts")
    create = _command(
        user_commands,
        "create",
        cmd_users_create,
        "create an account with any role",
        "echo 'a long passphrase' | tillbox users create --email admin@example.com --role admin --password-stdin",
    )
    _email_option(create)
    create.add_argument("--role", choices=_ROLES, default="customer", help="the account's role")
    _password_stdin_option(create)
    listing = _command(user_commands, "list", cmd_users_list, "list accounts", "tillbox users list --role admin")
    listing.add_argument("--role", choices=_ROLES, help="only accounts with this role (default: every role)")
    listing.add_argument(
        "--json", action="store_true", help="print a JSON array of users, each as the API returns it, for scripts"
    )
    disable = _command(
        user_commands,
        "disable",
        cmd_users_disable,
        "disable an account and end its sessions",
        "tillbox users disable --email someone@example.com",
    )
    _email_option(disable)
    enable = _command(
        user_commands,
        "enable",
        cmd_users_enable,
        "enable a disabled account (it logs in again; its old sessions stay ended)",
        "tillbox users enable --email someone@example.com",
    )
    _email_option(enable)
    set_role = _command(
        user_commands,
        "set-role",
        cmd_users_set_role,
        "give an account another role",
        "tillbox users set-role --email someone@example.com --role staff",
    )
    _email_option(set_role)
    set_role.add_argument("--role", choices=_ROLES, required=True, help="the account's new role")
    reset_password = _command(
        user_commands,
        "reset-password",
        cmd_users_reset_password,
        "set a new password for an account and end its sessions",
        "tillbox users reset-password --email someone@example.com",
    )
    _email_option(reset_password)
    _password_stdin_option(reset_password)

    client_commands = _group(commands, "clients", "manage the OAuth clients (apps and services that ask for tokens)")
    create_client = _command(
        client_commands,
        "create",
        cmd_clients_create,
        "register an OAuth client; a confidential one's secret is printed once",
        "tillbox clients create --name Reports --type confidential --redirect-uri https://reports.example.com/cb"
        " --grant authorization_code --grant refresh_token --scope 'orders:read catalog:read'",
    )
    create_client.add_argument("--name", required=True, help="what the client is called (1-100 characters)")
    create_client.add_argument(
        "--type",
        required=True,
        choices=["confidential", "public"],
        help="confidential: a server that keeps a secret; public: a browser or native app (no secret)",
    )
    create_client.add_argument(
        "--redirect-uri",
        action="append",
        required=True,
        metavar="URI",
        help="where the client may be sent back, compared exactly: https (http only on 127.0.0.1, [::1],"
        " localhost), no fragment, no user name, no wildcard; repeat for several (at most 10)",
    )
    create_client.add_argument(
        "--grant",
        action="append",
        required=True,
        choices=["authorization_code", "refresh_token", "client_credentials"],
        help="a grant the client may use; repeat for several (refresh_token needs authorization_code;"
        " client_credentials is for confidential clients)",
    )
    create_client.add_argument(
        "--scope",
        action="append",
        required=True,
        metavar="SCOPE",
        help="a scope the client may be given, or several separated by spaces; repeatable",
    )
    create_client.add_argument(
        "--json", action="store_true", help="print the client as the API returns it, with its secret, as JSON"
    )
    client_listing = _command(
        client_commands, "list", cmd_clients_list, "list OAuth clients", "tillbox clients list --status active"
    )
    client_listing.add_argument(
        "--status", choices=["active", "disabled"], help="only clients with this status (default: every status)"
    )
    client_listing.add_argument(
        "--json", action="store_true", help="print a JSON array of clients, each as the API returns it, for scripts"
    )
    show_client = _command(
        client_commands,
        "show",
        cmd_clients_show,
        "show one OAuth client",
        "tillbox clients show cli_01JV3QC3D9S8V1R6F3G0H5J4M7",
    )
    show_client.add_argument("id", help="the client's id (cli_...)")
    show_client.add_argument("--json", action="store_true", help="print the client as the API returns it, as JSON")
    disable_client = _command(
        client_commands,
        "disable",
        cmd_clients_disable,
        "disable an OAuth client: its secret no longer authenticates it",
        "tillbox clients disable cli_01JV3QC3D9S8V1R6F3G0H5J4M7",
    )
    disable_client.add_argument("id", help="the client's id (cli_...)")
    enable_client = _command(
        client_commands,
        "enable",
        cmd_clients_enable,
        "enable a disabled OAuth client again",
        "tillbox clients enable cli_01JV3QC3D9S8V1R6F3G0H5J4M7",
    )
    enable_client.add_argument("id", help="the client's id (cli_...)")
    rotate_client = _command(
        client_commands,
        "rotate-secret",
        cmd_clients_rotate_secret,
        "give a confidential OAuth client a new secret, printed once; the old one stops working at once",
        "tillbox clients rotate-secret cli_01JV3QC3D9S8V1R6F3G0H5J4M7",
    )
    rotate_client.add_argument("id", help="the client's id (cli_...)")
    rotate_client.add_argument(
        "--json", action="store_true", help="print the client as the API returns it, with its new secret, as JSON"
    )

    key_commands = _group(commands, "keys", "manage the token signing keys and personal API keys")
    _command(
        key_commands,
        "rotate",
        cmd_keys_rotate,
        "sign tokens with a new key from now on (the old one verifies until its tokens expire)",
        "tillbox keys rotate",
    )
    api_key_commands = _group(key_commands, "api", "manage admins' personal API keys (tbk_...) for scripts")
    api_create = _command(
        api_key_commands,
        "create",
        cmd_keys_api_create,
        "create a personal API key for an admin; its secret is printed once",
        "tillbox keys api create --user admin@example.com --name 'stock export' --scope 'catalog:read orders:read'"
        " --expires-in 90",
    )
    api_create.add_argument("--user", required=True, metavar="EMAIL", help="the admin who owns the key (any case)")
    api_create.add_argument("--name", required=True, help="what the key is for, 1-100 characters")
    api_create.add_argument(
        "--scope",
        required=True,
        action="append",
        metavar="SCOPE",
        help="a scope the key may use (repeat it, or give several space-separated), e.g. catalog:read",
    )
    api_create.add_argument(
        "--expires-in", required=True, type=int, metavar="DAYS", help="days until the key stops working (1-365)"
    )
    api_create.add_argument(
        "--json", action="store_true", help="print the key, with its secret, as JSON (as the API returns it)"
    )
    api_list = _command(
        api_key_commands,
        "list",
        cmd_keys_api_list,
        "list personal API keys, newest first, with their last use (never a secret)",
        "tillbox keys api list --user admin@example.com",
    )
    api_list.add_argument("--user", metavar="EMAIL", help="only this account's keys (default: every account's)")
    api_list.add_argument(
        "--json", action="store_true", help="print a JSON array of keys, each as the API returns it, for scripts"
    )
    api_revoke = _command(
        api_key_commands,
        "revoke",
        cmd_keys_api_revoke,
        "revoke a personal API key: it is refused from the next request on",
        "tillbox keys api revoke key_01JV3QC3D9S8V1R6F3G0H5J4M7",
    )
    api_revoke.add_argument("key_id", metavar="KEY_ID", help="the key's id, as `keys api list` shows it")

    backup = _command(
        commands,
        "backup",
        cmd_backup,
        "copy the database to a file, consistently, even while a server is writing",
        "tillbox backup /var/backups/tillbox-2026-11-29.db",
    )
    backup.add_argument("path", help="the backup file to write")
    backup.add_argument("--force", action="store_true", help="overwrite the file if it exists")
    restore = _command(
        commands,
        "restore",
        cmd_restore,
        "replace the database with a backup (checked first; refused while a server runs)",
        "tillbox restore /var/backups/tillbox-2026-11-29.db --yes",
    )
    restore.add_argument("path", help="the backup file to restore")
    restore.add_argument("--yes", action="store_true", help="do not ask before replacing an existing database")

    _command(
        commands,
        "openapi",
        cmd_openapi,
        "print the OpenAPI document",
        "tillbox openapi > openapi.json",
        opens_store=False,
    )
    config_commands = _group(commands, "config", "inspect the settings")
    _command(
        config_commands,
        "show",
        cmd_config_show,
        "print the effective settings and where each came from (secrets masked)",
        "TILLBOX_SERVER_PORT=9000 tillbox config show",
        opens_store=False,
    )

    _command(
        commands, "version", cmd_version, "print the version and build commit", "tillbox version", opens_store=False
    )
    return parser


def _main(argv: Sequence[str] | None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        # A command group without its command (``tillbox users``) is a usage error.
        args.group.print_help(sys.stderr)
        raise SystemExit(2)
    try:
        handler(args)
    except (ConfigError, CommandError, DataDirInUse) as e:
        _fail(str(e))
    except ValidationFailed as e:
        _fail(f"{_problems(e)} ({e.code})")
    except DomainError as e:
        _fail(f"{e.message} ({e.code})")
    except KeyboardInterrupt:
        _fail("interrupted")
    except Exception as e:
        if isinstance(e, _store_and_server_errors()):
            _fail(str(e))
        raise


def _problems(error: ValidationFailed) -> str:
    """Every field's problem, on the one line: the message alone names only the fields."""
    fields: dict[str, str] = error.details.get("fields", {})
    if len(fields) <= 1 or error.details.get("truncated"):
        return error.message
    return "; ".join(f"{name} {problem}" for name, problem in fields.items()) + "."


def _store_and_server_errors() -> tuple[type[Exception], ...]:
    """The store's and the server's failures that say everything in their message; imported
    once one has happened (see the imports at the top)."""
    from adapters.sqlite.maintenance import BackupError
    from adapters.sqlite.migrations import MigrationError
    from entrypoints.container import DataDirError
    from entrypoints.server import ServerError

    return (DataDirError, ServerError, BackupError, MigrationError)


def main(argv: Sequence[str] | None = None) -> None:
    # Everything Tillbox writes (database, keys, caches) is for its own eyes only.
    os.umask(0o077)
    try:
        try:
            _main(argv)
        finally:
            # Output to a pipe is buffered: flush here, where a closed pipe can be handled,
            # not at interpreter exit, where it can only be reported.
            sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``tillbox config show | head``): that is its choice, not
        # an error worth a traceback. As the Python documentation recommends (signal
        # module, "Note on SIGPIPE"): point stdout at devnull, so that the final flush
        # has somewhere to go, and exit 1 without a word.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()

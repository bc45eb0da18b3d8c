"""The ``tillbox`` command line. Commands call services; errors are one line and exit 1."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import random
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn

from core.domain.errors import DomainError, SkuTaken
from core.domain.users import Actor, Role
from core.services.auth import CreateUser
from core.services.catalog import CreateProduct
from entrypoints.container import Container, DataDirError, build_container, provide, start, stop
from entrypoints.logs import configure_logging
from entrypoints.server import ServerError
from entrypoints.settings import ConfigError, Settings, find_config, load_settings
from entrypoints.version import COMMIT, VERSION

log = logging.getLogger("tillbox")


class CommandError(Exception):
    """A failure to report as one line, without a traceback."""


def _fail(message: str) -> NoReturn:
    print(f"tillbox: error: {message}", file=sys.stderr)
    raise SystemExit(1)


# Shared plumbing.
def _settings(args: argparse.Namespace, flags: dict[tuple[str, str], Any] | None = None) -> Settings:
    return load_settings(find_config(args.config, os.environ), os.environ, flags)


def _run_with_container(settings: Settings, work: Callable[[Container], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        container = build_container(settings)
        await start(container)
        try:
            return await work(container)
        finally:
            await stop(container)

    return asyncio.run(main())


# Commands.
def cmd_serve(args: argparse.Namespace) -> None:
    from entrypoints.server import serve

    settings = _settings(args, {("server", "host"): args.host, ("server", "port"): args.port})
    configure_logging(settings["log"]["level"])
    serve(settings)


def cmd_db_migrate(args: argparse.Namespace) -> None:
    from adapters.sqlite.migrations import migrate
    from entrypoints.container import DATABASE_FILE, prepare_data_dir

    settings = _settings(args)
    data_dir = next(prepare_data_dir(settings["data"]["dir"]))
    version = migrate(data_dir / DATABASE_FILE)
    print(f"database {data_dir / DATABASE_FILE} is at schema version {version}")


_ADJECTIVES = [
    "Classic",
    "Compact",
    "Deluxe",
    "Eco",
    "Everyday",
    "Handmade",
    "Heavy",
    "Light",
    "Mini",
    "Organic",
    "Pro",
    "Rugged",
    "Smart",
    "Vintage",
    "Wireless",
]
_MATERIALS = [
    "Bamboo",
    "Canvas",
    "Ceramic",
    "Cotton",
    "Copper",
    "Glass",
    "Leather",
    "Linen",
    "Maple",
    "Oak",
    "Steel",
    "Walnut",
    "Wool",
]
_THINGS = [
    "Backpack",
    "Blanket",
    "Bottle",
    "Bowl",
    "Candle",
    "Chair",
    "Desk",
    "Lamp",
    "Headphones",
    "Jacket",
    "Kettle",
    "Knife",
    "Mug",
    "Notebook",
    "Pan",
    "Pen",
    "Pillow",
    "Plate",
    "Scarf",
    "Shelf",
    "Speaker",
    "Table",
    "Teapot",
    "Towel",
    "Tray",
    "Umbrella",
    "Vase",
    "Wallet",
    "Watch",
]


def demo_products(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """A deterministic demo catalog: the same names, skus and prices on every machine."""
    rng = random.Random(seed)  # noqa: S311 - demo data, not security
    products = []
    for n in range(1, count + 1):
        adjective, material, thing = rng.choice(_ADJECTIVES), rng.choice(_MATERIALS), rng.choice(_THINGS)
        products.append(
            {
                "sku": f"DEMO-{n:05d}",
                "name": f"{adjective} {material} {thing}",
                "description": f"A {adjective.lower()} {thing.lower()} made of {material.lower()}. Demo item {n}.",
                "price": rng.randrange(1, 500) * 100 - 1,  # 0.99 to 498.99
                "stock": rng.randrange(0, 500),
            }
        )
    return products


def cmd_db_seed(args: argparse.Namespace) -> None:
    from rich.progress import Progress

    settings = _settings(args)
    if args.count < 1:
        raise CommandError("--count must be at least 1")

    async def seed(container: Container) -> tuple[int, int]:
        catalog = await provide(container.catalog_service)
        operator = Actor.operator()
        created = skipped = 0
        items = demo_products(args.count)
        with Progress(transient=not sys.stderr.isatty(), console=None) as progress:
            task = progress.add_task("Seeding the demo catalog", total=len(items))

            async def one(item: dict[str, Any]) -> bool:
                try:
                    await catalog.create_product(CreateProduct(actor=operator, **item))
                    return True
                except SkuTaken:
                    return False

            # Batches of concurrent creations share commits (group commit).
            for start in range(0, len(items), 200):
                results = await asyncio.gather(*(one(i) for i in items[start : start + 200]))
                created += sum(results)
                skipped += len(results) - sum(results)
                progress.advance(task, len(results))
        return created, skipped

    created, skipped = _run_with_container(settings, seed)
    print(f"seeded {created} products ({skipped} already there)")


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise CommandError("no password on standard input")
        return password
    if not sys.stdin.isatty():
        raise CommandError("no terminal to ask for the password; use --password-stdin")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Repeat it: "):
        raise CommandError("the passwords differ")
    return first


def cmd_users_create(args: argparse.Namespace) -> None:
    settings = _settings(args)
    password = _read_password(args)

    async def create(container: Container) -> Any:
        auth = await provide(container.auth_service)
        return await auth.create_user(
            CreateUser(actor=Actor.operator(), email=args.email, password=password, role=Role(args.role))
        )

    user = _run_with_container(settings, create)
    print(f"created {user.role.value} {user.email} ({user.id})")


def cmd_version(args: argparse.Namespace) -> None:
    print(f"tillbox {VERSION}" + (f" (commit {COMMIT})" if COMMIT else ""))


# The parser.
class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


def _command(
    subparsers: Any, name: str, handler: Callable[[argparse.Namespace], None], help: str, example: str
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help, description=help, epilog=f"example:\n  {example}", formatter_class=_Formatter
    )
    parser.set_defaults(handler=handler)
    parser.add_argument("--config", metavar="PATH", help="settings file (default: ./config.toml if present)")
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tillbox",
        description="Tillbox: a self-hosted commerce backend in one file.",
        epilog="example:\n  tillbox serve --port 8080\n\nEvery command has --help.",
        formatter_class=_Formatter,
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    serve = _command(commands, "serve", cmd_serve, "run the HTTP API", "tillbox serve --host 0.0.0.0 --port 8080")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080)")

    db = commands.add_parser("db", help="manage the database", description="Manage the database.")
    db_commands = db.add_subparsers(title="commands", metavar="COMMAND")
    _command(db_commands, "migrate", cmd_db_migrate, "apply pending schema migrations", "tillbox db migrate")
    seed = _command(db_commands, "seed", cmd_db_seed, "add a demo catalog", "tillbox db seed --count 1000")
    seed.add_argument("--count", type=int, default=1000, help="number of demo products (default 1000)")

    users = commands.add_parser("users", help="manage accounts", description="Manage accounts.")
    user_commands = users.add_subparsers(title="commands", metavar="COMMAND")
    create = _command(
        user_commands,
        "create",
        cmd_users_create,
        "create an account with any role",
        "echo 'a long passphrase' | tillbox users create --email admin@example.com --role admin --password-stdin",
    )
    create.add_argument("--email", required=True)
    create.add_argument("--role", choices=[r.value for r in Role], default="customer")
    create.add_argument("--password-stdin", action="store_true", help="read the password from standard input")

    _command(commands, "version", cmd_version, "print the version and build commit", "tillbox version")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    # Everything Tillbox writes (database, keys, caches) is for its own eyes only.
    os.umask(0o077)
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        raise SystemExit(2)
    try:
        handler(args)
    except (ConfigError, DataDirError, CommandError, ServerError) as e:
        _fail(str(e))
    except DomainError as e:
        _fail(f"{e.message} ({e.code})")
    except KeyboardInterrupt:
        _fail("interrupted")


if __name__ == "__main__":
    main()

"""SqliteDatabase on a real file: settings, migrations, group commit, several processes,
failures and shutdown. What every adapter must do is in tests/contract; this is what is
particular to SQLite."""

from __future__ import annotations

import asyncio
import logging
import pathlib
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

import adapters.sqlite.migrations as migrations_module
from adapters.sqlite import LATEST_VERSION, MigrationError, SqliteDatabase, migrate, schema_version
from adapters.sqlite.connection import connect
from adapters.sqlite.migrations import Migration
from core.domain.audit import AuditEntry
from core.domain.catalog import Product
from core.domain.errors import Unavailable
from core.domain.money import Money
from core.domain.users import RefreshToken, Role, User, UserStatus
from tests.fakes import FixedClock

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CLOCK = FixedClock(T0)
REPO = pathlib.Path(__file__).resolve().parents[2]


def product(n: int, *, stock: int = 5, price: int = 1000) -> Product:
    return Product(
        id=f"prd_{n:06d}",
        sku=f"SKU-{n}",
        name=f"Thing {n}",
        description="",
        price=Money(price, "USD"),
        stock=stock,
        active=True,
        created_at=T0,
        updated_at=T0,
    )


def user(n: int) -> User:
    return User(
        id=f"usr_{n:06d}",
        email=f"user{n}@example.com",
        email_skeleton=f"user{n}@example.com",
        password_hash="fake$",
        role=Role.CUSTOMER,
        status=UserStatus.ACTIVE,
        created_at=T0,
        updated_at=T0,
    )


@pytest.fixture
def path(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "data" / "tillbox.db"


@pytest.fixture
async def db(path: pathlib.Path) -> AsyncIterator[SqliteDatabase]:
    database = SqliteDatabase(path, clock=CLOCK)
    await database.open()
    yield database
    await database.close()


async def add_product(db: SqliteDatabase, n: int) -> None:
    async with db() as uow:
        await uow.products.add(product(n))
        await uow.commit()


def count(db: SqliteDatabase, table: str = "products") -> int:
    return int(db.read_scalar(f"SELECT count(*) FROM {table}"))


# Settings.
async def test_open_creates_the_directory_and_construction_creates_nothing(path: pathlib.Path) -> None:
    database = SqliteDatabase(path, clock=CLOCK)
    assert not path.parent.exists()
    await database.open()
    try:
        assert path.exists()
        assert database.check_ready() == {"database": "ok", "schema_version": LATEST_VERSION}
    finally:
        await database.close()
    with pytest.raises(Unavailable):
        database.check_ready()


async def test_readiness_needs_the_schema_this_code_expects(db: SqliteDatabase, path: pathlib.Path) -> None:
    raw = connect(path, busy_timeout_ms=1000)
    try:
        raw.execute("INSERT INTO _migrations VALUES (99, 'from the future', '2027-01-01T00:00:00.000000Z')")
    finally:
        raw.close()
    with pytest.raises(Unavailable) as caught:
        db.check_ready()
    assert caught.value.code == "schema_mismatch"


async def test_every_connection_has_wal_full_sync_and_foreign_keys(db: SqliteDatabase) -> None:
    expected = {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1, "busy_timeout": 5000}
    pragmas = db.pragmas()
    # The writer's savepoint journals spill to a file past 64 KiB (see connection.py); readers sort in memory.
    assert pragmas["writer"] == {**expected, "query_only": 0, "temp_store": 0}
    assert pragmas["reader"] == {**expected, "query_only": 1, "temp_store": 2}
    assert db.read_scalar("PRAGMA journal_mode") == "wal"


async def test_the_busy_timeout_is_configurable(path: pathlib.Path) -> None:
    database = SqliteDatabase(path, busy_timeout_ms=250, clock=CLOCK)
    await database.open()
    try:
        assert {c["busy_timeout"] for c in database.pragmas().values()} == {250}
    finally:
        await database.close()


# Migrations.
def test_migrations_are_recorded_and_idempotent(path: pathlib.Path) -> None:
    assert schema_version(path) == 0
    assert not path.exists()  # asking does not create the file

    assert migrate(path) == LATEST_VERSION
    assert migrate(path) == LATEST_VERSION
    assert schema_version(path) == LATEST_VERSION

    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT version, name, applied_at FROM _migrations ORDER BY version").fetchall()
    conn.close()
    assert [(v, name) for v, name, _ in rows] == [(m.version, m.name) for m in migrations_module.MIGRATIONS]
    assert all(len(applied_at) == 27 and applied_at.endswith("Z") for _, _, applied_at in rows)


# Each child imports first, says so, and opens the store only when the parent says go: the
# opens happen together, not staggered by import times.
_OPEN_WHEN_TOLD = """
import pathlib, sys
from adapters.sqlite import migrate
print("ready", flush=True)
sys.stdin.readline()
print(migrate(pathlib.Path(sys.argv[1])), flush=True)
"""


def test_processes_starting_at_once_apply_each_migration_once(path: pathlib.Path) -> None:
    path.parent.mkdir(parents=True)
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _OPEN_WHEN_TOLD, str(path)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    try:
        for p in processes:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in processes:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = [p.communicate(timeout=60) for p in processes]
    finally:
        for p in processes:
            p.kill()

    assert [(p.returncode, err) for p, (_, err) in zip(processes, results, strict=True)] == [(0, "")] * 8
    assert [out.strip() for out, _ in results] == [str(LATEST_VERSION)] * 8
    conn = sqlite3.connect(path)
    versions = [v for (v,) in conn.execute("SELECT version FROM _migrations ORDER BY version")]
    conn.close()
    assert versions == list(range(1, LATEST_VERSION + 1))


class _Retried(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.set()


def test_opening_a_new_store_while_another_process_writes_its_header_waits_its_turn(path: pathlib.Path) -> None:
    # Switching a new file to WAL reads its header, then rewrites it. If another connection
    # holds the write lock in between, SQLite says "database is locked" at once, without
    # waiting (waiting could deadlock): what several processes opening a new store meet.
    path.parent.mkdir(parents=True)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    retried = _Retried()
    logger = logging.getLogger("adapters.sqlite.connection")
    logger.addHandler(retried)
    level, logger.level = logger.level, logging.DEBUG
    opened: list[sqlite3.Connection | BaseException] = []

    def open_store() -> None:
        try:
            opened.append(connect(path, busy_timeout_ms=30_000))
        except BaseException as exc:
            opened.append(exc)

    opener = threading.Thread(target=open_store)
    try:
        opener.start()
        deadline = time.monotonic() + 30
        while not (retried.seen.is_set() or opened) and time.monotonic() < deadline:
            retried.seen.wait(timeout=0.01)
        assert retried.seen.is_set(), opened  # it met the lock, and is trying again
        other.execute("ROLLBACK")
        opener.join(timeout=30)
    finally:
        logger.removeHandler(retried)
        logger.level = level
        if other.in_transaction:
            other.execute("ROLLBACK")
        other.close()

    assert len(opened) == 1 and isinstance(opened[0], sqlite3.Connection), opened
    assert opened[0].execute("PRAGMA journal_mode").fetchone() == ("wal",)
    opened[0].close()


def test_a_failing_migration_leaves_the_schema_as_it_was(path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    migrate(path)

    def broken(db: object) -> None:
        conn = db.conn  # type: ignore[attr-defined]
        conn.execute("CREATE TABLE half_done (x INTEGER)")
        raise ValueError("typo in migration")

    broken_next = Migration(LATEST_VERSION + 1, "broken", broken)
    monkeypatch.setattr(migrations_module, "MIGRATIONS", (*migrations_module.MIGRATIONS, broken_next))
    monkeypatch.setattr(migrations_module, "LATEST_VERSION", LATEST_VERSION + 1)

    with pytest.raises(MigrationError, match=f"migration {LATEST_VERSION + 1} \\(broken\\) failed: typo in migration"):
        migrations_module.migrate(path)

    assert schema_version(path) == LATEST_VERSION
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM sqlite_schema WHERE name = 'half_done'").fetchone() == (0,)
    conn.close()


async def test_a_database_newer_than_the_code_is_refused(path: pathlib.Path) -> None:
    migrate(path)
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO _migrations VALUES (?, 'from the future', '2027-01-01T00:00:00.000000Z')", (99,))
    conn.commit()
    conn.close()

    with pytest.raises(MigrationError, match="schema version 99, newer than this Tillbox"):
        migrate(path)
    with pytest.raises(MigrationError):
        await SqliteDatabase(path, clock=CLOCK).open()


# Units of work.
async def test_two_instances_on_one_file_see_each_others_commits(path: pathlib.Path) -> None:
    first, second = SqliteDatabase(path, clock=CLOCK), SqliteDatabase(path, clock=CLOCK)
    await first.open()
    await second.open()
    try:
        await add_product(first, 1)
        async with second(readonly=True) as uow:
            assert await uow.products.get("prd_000001") == product(1)
        await add_product(second, 2)
        async with first(readonly=True) as uow:
            assert await uow.products.get("prd_000002") == product(2)

        # Both writing at once: their batches queue on the file's lock, nothing is lost.
        await asyncio.gather(*(add_product(first if n % 2 else second, n) for n in range(3, 103)))
        assert count(first) == count(second) == 102
    finally:
        await first.close()
        await second.close()


async def test_concurrent_units_share_commits(db: SqliteDatabase) -> None:
    await asyncio.gather(*(add_product(db, n) for n in range(200)))

    assert count(db) == 200
    assert db.stats.units_committed == 200
    assert 1 <= db.stats.commits <= 10  # group commit: one fsync serves many units
    assert db.stats.largest_batch >= 20
    assert db.pending_commits == 0


async def test_a_lone_unit_is_committed_without_waiting_for_company(db: SqliteDatabase) -> None:
    await asyncio.wait_for(add_product(db, 1), timeout=5)
    assert db.stats.commits == 1
    assert count(db) == 1


async def test_a_unit_that_raises_leaves_nothing(db: SqliteDatabase, path: pathlib.Path) -> None:
    async def half_done() -> None:
        async with db() as uow:
            await uow.products.add(product(1))
            await uow.audit.append(
                AuditEntry(
                    id="aud_1", at=T0, actor_id=None, action="x", object_type="product", object_id=None, source_ip=None
                )
            )
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await half_done()
    assert (count(db, "products"), count(db, "audit_log"), count(db, "products_fts")) == (0, 0, 0)
    assert db.stats.units_rolled_back == 1
    assert db.stats.commits == 0  # nothing to commit: the batch was rolled back at once
    other = connect(path, busy_timeout_ms=0)  # so other processes can write at once
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    finally:
        other.close()
    await add_product(db, 2)  # and so can this one
    assert count(db) == 1


async def test_when_a_batch_cannot_commit_every_unit_in_it_hears_so_and_nothing_lands(db: SqliteDatabase) -> None:
    # A deferred foreign key is the one way to make COMMIT itself fail on purpose.
    async def poisoned() -> None:
        async with db() as uow:
            conn = await uow.connection()
            conn.execute("PRAGMA defer_foreign_keys = ON")
            await uow.refresh_tokens.add(
                RefreshToken(
                    id="rtk_1", user_id="usr_nobody", family_id="f", token_digest="d", created_at=T0, expires_at=T0
                )
            )
            await uow.commit()

    outcomes = await asyncio.gather(
        *(add_product(db, n) for n in range(5)),
        poisoned(),
        *(add_product(db, n) for n in range(5, 10)),
        return_exceptions=True,
    )

    assert [getattr(o, "code", o) for o in outcomes] == ["commit_failed"] * 11
    assert (db.stats.commits, db.stats.failed_commits, db.pending_commits) == (0, 1, 0)
    assert (count(db, "products"), count(db, "refresh_tokens")) == (0, 0)
    await add_product(db, 1)  # the next batch is a fresh transaction
    assert count(db) == 1


async def test_close_lets_a_pending_batch_finish_and_loses_nothing(path: pathlib.Path) -> None:
    database = SqliteDatabase(path, clock=CLOCK)
    await database.open()
    tasks = [asyncio.create_task(add_product(database, n)) for n in range(50)]
    while database.pending_commits == 0:
        await asyncio.sleep(0)

    await database.close()

    assert all(t.done() and t.exception() is None for t in tasks)
    reopened = SqliteDatabase(path, clock=CLOCK)
    await reopened.open()
    try:
        assert count(reopened) == 50
    finally:
        await reopened.close()


async def test_after_close_new_units_are_refused(path: pathlib.Path) -> None:
    database = SqliteDatabase(path, clock=CLOCK)
    await database.open()
    await database.close()
    with pytest.raises(Unavailable):
        async with database():
            pass
    with pytest.raises(Unavailable):
        async with database(readonly=True):
            pass


async def test_a_unit_cannot_be_used_after_its_block(db: SqliteDatabase) -> None:
    async with db() as uow:
        await uow.products.add(product(1))
        await uow.commit()
    with pytest.raises(RuntimeError, match="finished"):
        await uow.products.get("prd_000001")
    async with db(readonly=True) as reader:
        pass
    with pytest.raises(RuntimeError, match="finished"):
        await reader.products.get("prd_000001")


async def test_a_read_only_unit_cannot_write(db: SqliteDatabase) -> None:
    async with db(readonly=True) as uow:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await uow.products.add(product(1))
    assert count(db) == 0


async def test_another_process_holding_the_write_lock_makes_writes_unavailable(path: pathlib.Path) -> None:
    database = SqliteDatabase(path, busy_timeout_ms=200, clock=CLOCK)
    await database.open()
    other = connect(path, busy_timeout_ms=200)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(Unavailable) as caught:
            await add_product(database, 1)

        assert (caught.value.code, caught.value.retry_after) == ("database_busy", 1)
        async with database(readonly=True) as uow:  # readers do not wait for writers
            assert await uow.products.get("prd_000001") is None

        other.execute("ROLLBACK")
        await add_product(database, 1)  # the write lock was released after the failure
        assert count(database) == 1
    finally:
        other.close()
        await database.close()


async def test_the_loop_runs_on_while_a_unit_waits_for_another_process_lock(path: pathlib.Path) -> None:
    database = SqliteDatabase(
        path, busy_timeout_ms=60_000, clock=CLOCK
    )  # longer than the test: the lock's end ends the wait
    await database.open()
    other = connect(path, busy_timeout_ms=60_000)
    try:
        other.execute("BEGIN IMMEDIATE")
        writing = asyncio.create_task(add_product(database, 1))
        for _ in range(20):  # the loop keeps turning (a BEGIN run on it would hold it for a minute)
            await asyncio.sleep(0)
            assert not writing.done()
        other.execute("ROLLBACK")
        await asyncio.wait_for(writing, timeout=30)
        assert count(database) == 1
    finally:
        other.close()
        await database.close()


async def test_a_unit_cancelled_while_waiting_for_the_file_lock_leaves_the_writer_usable(
    path: pathlib.Path,
) -> None:
    database = SqliteDatabase(
        path, busy_timeout_ms=60_000, clock=CLOCK
    )  # longer than the test: the lock's end ends the wait
    await database.open()
    other = connect(path, busy_timeout_ms=60_000)
    try:
        other.execute("BEGIN IMMEDIATE")
        waiting = asyncio.create_task(add_product(database, 1))
        queued = asyncio.create_task(add_product(database, 2))
        await asyncio.sleep(0)  # each takes its first step: one waits in the writer thread, one for the lock
        assert not (waiting.done() or queued.done())
        waiting.cancel()
        await asyncio.sleep(0)  # the cancellation reaches it while the thread still waits for the file lock
        assert not waiting.done()  # it waits for the thread before it cleans up
        other.execute("ROLLBACK")

        await asyncio.wait_for(queued, timeout=5)
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert database.read_scalar("SELECT group_concat(id) FROM products") == "prd_000002"
    finally:
        other.close()
        await database.close()


# The schema's own defences, behind the domain's.
async def test_check_constraints_refuse_what_the_domain_would_never_write(db: SqliteDatabase) -> None:
    for bad in (product(1, stock=-1), product(2, price=-1)):
        with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
            async with db() as uow:
                await uow.products.add(bad)
    shouty = user(1)
    shouty.email = "Shouty@Example.com"
    with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
        async with db() as uow:
            await uow.users.add(shouty)
    assert (count(db, "products"), count(db, "users")) == (0, 0)


async def test_refresh_tokens_belong_to_a_user_and_go_with_them(db: SqliteDatabase, path: pathlib.Path) -> None:
    def token(n: int, user_id: str) -> RefreshToken:
        return RefreshToken(
            id=f"rtk_{n}", user_id=user_id, family_id="fam", token_digest=f"d{n}", created_at=T0, expires_at=T0
        )

    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        async with db() as uow:
            await uow.refresh_tokens.add(token(1, "usr_nobody"))
    async with db() as uow:
        await uow.users.add(user(1))
        await uow.refresh_tokens.add(token(2, user(1).id))
        await uow.commit()

    raw = connect(path, busy_timeout_ms=1000)
    try:
        raw.execute("DELETE FROM users WHERE id = ?", (user(1).id,))
    finally:
        raw.close()
    assert count(db, "refresh_tokens") == 0


async def test_the_audit_log_is_append_only(db: SqliteDatabase, path: pathlib.Path) -> None:
    async with db() as uow:
        await uow.audit.append(
            AuditEntry(id="aud_1", at=T0, actor_id=None, action="x", object_type="y", object_id=None, source_ip=None)
        )
        await uow.commit()

    raw = connect(path, busy_timeout_ms=1000)
    try:
        for statement in ("UPDATE audit_log SET action = 'z'", "DELETE FROM audit_log"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                raw.execute(statement)
    finally:
        raw.close()
    assert db.read_scalar("SELECT action FROM audit_log") == "x"


async def test_a_write_unit_sees_the_units_of_the_open_group_before_their_commit_returns(
    tmp_path: pathlib.Path,
) -> None:
    """What IdempotencyService.lookup(latest=True) relies on: a copy of a request whose commit
    is in the group being made durable is seen by a write unit, not yet by a read-only one."""
    clock = FixedClock(datetime(2026, 1, 1, tzinfo=UTC))
    db = SqliteDatabase(tmp_path / "tillbox.db", clock=clock)
    await db.open()
    try:
        lamp = Product("prd_1", "LAMP-1", "Lamp", "", Money(100, "USD"), 1, True, clock.now(), clock.now())
        async with db() as writer:
            await writer.products.add(lamp)
            commit = asyncio.ensure_future(writer.commit())
            await asyncio.sleep(0)  # released into the group; the group's COMMIT not yet done
            assert not commit.done()
            async with db() as reader:
                seen = await reader.products.get(lamp.id)
            await commit
        assert seen == lamp
    finally:
        await db.close()

"""What several instances share through the PostgreSQL store (adapters/postgres/shared.py):
signing keys, the request-digest key, throttle counts; and the one schema in two dialects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.auth.tokens import JwtAccessTokens
from adapters.postgres import PostgresDatabase
from adapters.postgres.migrations import MIGRATIONS as POSTGRES_MIGRATIONS
from adapters.postgres.shared import PUBLISH_DELAY, PostgresSigningKeys, PostgresThrottle, load_secret
from adapters.sqlite.connection import connect
from adapters.sqlite.migrations import MIGRATIONS as SQLITE_MIGRATIONS
from adapters.sqlite.migrations import apply_migrations
from core.domain.errors import Throttled, TokenInvalid
from core.domain.users import Role
from core.ports.identity import ThrottleBudget
from tests.fakes import FixedClock
from tests.postgres import emptied_stores, truncate_all

pytestmark = pytest.mark.postgres
TTL = 900


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
async def two_instances(
    postgres_url: str, clock: FixedClock
) -> AsyncIterator[tuple[PostgresDatabase, PostgresDatabase]]:
    """Two instances' connections to one emptied store."""
    async with emptied_stores(postgres_url, clock, 2) as (first, second):
        yield first, second


def _tokens(keys: PostgresSigningKeys, clock: FixedClock) -> JwtAccessTokens:
    return JwtAccessTokens(keys, issuer="tillbox", audience="tillbox-api", ttl_seconds=TTL, clock=clock)


async def test_instances_starting_together_make_one_key_and_verify_each_others_tokens(
    two_instances: tuple[PostgresDatabase, PostgresDatabase], clock: FixedClock
) -> None:
    a, b = (PostgresSigningKeys(db, clock=clock) for db in two_instances)
    await a.open()
    await b.open()
    try:
        assert a.signing_key()[0] == b.signing_key()[0]
        assert await two_instances[0].fetchval("SELECT count(*) FROM signing_keys") == 1
        token = _tokens(a, clock).issue("usr_1", Role.CUSTOMER, "fam_1").token
        assert _tokens(b, clock).verify(token).user_id == "usr_1"
    finally:
        await a.close()
        await b.close()


async def test_a_rotation_is_known_everywhere_before_any_instance_signs_with_it(
    two_instances: tuple[PostgresDatabase, PostgresDatabase], clock: FixedClock
) -> None:
    a, b = (PostgresSigningKeys(db, clock=clock) for db in two_instances)
    await a.open()
    await b.open()
    try:
        old_kid = a.signing_key()[0]
        old_token = _tokens(a, clock).issue("usr_0", Role.CUSTOMER, "fam_0").token
        new_kid = await _tokens(a, clock).rotate_signing_key()
        assert a.signing_key()[0] == old_kid  # published, not yet signing
        await b.refresh()  # what b's background task does every REFRESH_SECONDS
        assert b.verification_key(new_kid) is not None

        clock.advance(seconds=PUBLISH_DELAY.total_seconds())
        assert a.signing_key()[0] == b.signing_key()[0] == new_kid
        token = _tokens(a, clock).issue("usr_1", Role.CUSTOMER, "fam_1").token
        assert _tokens(b, clock).verify(token).user_id == "usr_1"
        assert _tokens(b, clock).verify(old_token).user_id == "usr_0"  # the old key verifies until its tokens expire

        clock.advance(seconds=TTL + 61)
        assert b.verification_key(old_kid) is None
    finally:
        await a.close()
        await b.close()


async def test_a_corrupt_key_row_is_ignored_and_the_others_still_verify(
    two_instances: tuple[PostgresDatabase, PostgresDatabase], clock: FixedClock
) -> None:
    keys = PostgresSigningKeys(two_instances[0], clock=clock)
    await keys.open()
    try:
        token = _tokens(keys, clock).issue("usr_1", Role.CUSTOMER, "fam_1").token
        await two_instances[0].fetchval(
            "INSERT INTO signing_keys (kid, created_at, document) VALUES ('bad', now(), '{not json') RETURNING 1"
        )
        await keys.refresh()
        assert _tokens(keys, clock).verify(token).user_id == "usr_1"
        # One character of the signature changed (not the last: its low bits may be padding).
        tampered = token[:-5] + ("B" if token[-5] == "A" else "A") + token[-4:]
        with pytest.raises(TokenInvalid):
            _tokens(keys, clock).verify(tampered)
    finally:
        await keys.close()


async def test_every_instance_digests_with_the_one_key_the_first_made(
    two_instances: tuple[PostgresDatabase, PostgresDatabase],
) -> None:
    first = await load_secret(two_instances[0], "request-digest", 32)
    second = await load_secret(two_instances[1], "request-digest", 32)
    assert first == second
    assert len(first) == 32


async def test_throttle_counts_are_shared_and_hold_no_key_in_the_clear(
    two_instances: tuple[PostgresDatabase, PostgresDatabase], clock: FixedClock
) -> None:
    a, b = (PostgresThrottle(db, clock=clock) for db in two_instances)
    budget = ThrottleBudget("login:account:kate@example.com", 3, 900)
    await a.take([budget])
    await b.take([budget])
    await a.take([budget])
    with pytest.raises(Throttled):
        await b.take([budget])
    stored = await two_instances[0].fetch("SELECT key, ticket FROM throttle_uses")
    assert len(stored) == 3
    assert all("kate" not in row[0] for row in stored)
    clock.advance(seconds=901)
    await b.take([budget])  # the window slid: room again, and the expired uses are forgotten
    assert await two_instances[0].fetchval("SELECT count(*) FROM throttle_uses") == 1


def test_both_stores_have_the_same_migrations() -> None:
    assert [(m.version, m.name) for m in POSTGRES_MIGRATIONS] == [(m.version, m.name) for m in SQLITE_MIGRATIONS]


#: Columns one store has for its own engine's sake: SQLite's rowid alias of products (its
#: full-text index's key) and AUTOINCREMENT table; PostgreSQL's search vector, the
#: transaction id of ended sessions, and the tables of what instances share.
_SQLITE_ONLY = {("products", "seq"), ("sqlite_sequence", "name"), ("sqlite_sequence", "seq")}
_POSTGRES_ONLY_TABLES = {"signing_keys", "store_secrets", "throttle_uses"}
_POSTGRES_ONLY = {("products", "search"), ("revoked_sessions", "txn")}


async def test_both_stores_have_the_same_tables_and_columns(
    tmp_path: Path, postgres_url: str, clock: FixedClock
) -> None:
    path = tmp_path / "schema.db"
    conn = connect(path, busy_timeout_ms=1000)
    try:
        apply_migrations(conn, path)
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")]
        sqlite_columns = {
            (table, column[1])
            for table in tables
            if not table.startswith("products_fts")
            for column in conn.execute(f"PRAGMA table_info({table})")
        }
    finally:
        conn.close()
    await truncate_all(postgres_url)
    database = PostgresDatabase(postgres_url, clock=clock, pool_min=1, pool_max=2)
    await database.open()
    try:
        rows = await database.fetch(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"
        )
    finally:
        await database.close()
    postgres_columns = {(row[0], row[1]) for row in rows if row[0] not in _POSTGRES_ONLY_TABLES}
    assert sqlite_columns - _SQLITE_ONLY == postgres_columns - _POSTGRES_ONLY


async def test_db_reset_knows_every_table_the_migrations_make(postgres_url: str, clock: FixedClock) -> None:
    """`db reset` drops Tillbox's tables by name (whatever else shares the database): a table
    a migration adds and the list forgets would survive a reset and fail the migration after it."""
    from adapters.postgres import maintenance

    await truncate_all(postgres_url)
    database = PostgresDatabase(postgres_url, clock=clock, pool_min=1, pool_max=2)
    await database.open()
    try:
        rows = await database.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await database.close()
    assert {row[0] for row in rows} == set(maintenance._TABLES)


async def test_a_deadlock_gives_one_unit_up_as_a_transaction_conflict_and_keeps_nothing_of_it(
    two_instances: tuple[PostgresDatabase, PostgresDatabase], clock: FixedClock
) -> None:
    """Two write units lock two products in opposite orders: PostgreSQL finds the deadlock
    (after its deadlock_timeout, 1 s by default) and gives one of them up."""
    from tests.contract.builders import Make, store
    from tests.fakes import SequentialIds

    make = Make(SequentialIds(), clock)
    first, second = make.product("A-1", stock=5), make.product("B-1", stock=5)
    await store(two_instances[0], first, second)
    locked = [asyncio.Event(), asyncio.Event()]

    async def unit(n: int, db: PostgresDatabase, mine: str, theirs: str) -> None:
        async with db() as uow:
            product = await uow.products.get(mine)
            assert product is not None
            locked[n].set()
            await locked[1 - n].wait()
            other = await uow.products.get(theirs)  # waits for the other unit's lock
            assert other is not None
            product.adjust_stock(-1, at=clock.now())
            other.adjust_stock(-1, at=clock.now())
            await uow.products.update(product)
            await uow.products.update(other)
            await uow.commit()

    outcomes = await asyncio.gather(
        unit(0, two_instances[0], first.id, second.id),
        unit(1, two_instances[1], second.id, first.id),
        return_exceptions=True,
    )

    assert sorted(type(o).__name__ for o in outcomes) == ["NoneType", "TransactionConflict"]
    async with two_instances[0](readonly=True) as uow:
        stocks = [p.stock for p in await uow.products.get_many([first.id, second.id])]
    assert stocks == [4, 4]  # the winner's changes, and nothing of the unit given up

"""The operator's commands on a PostgreSQL store, as real processes: migrations applied once
by instances starting together, ``db reset``, ``users``, ``keys rotate``, and ``backup`` and
``restore`` through pg_dump and pg_restore (or one line saying what to use instead)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import subprocess
from pathlib import Path

import asyncpg
import pytest

from adapters.postgres.migrations import LATEST_VERSION
from tests.e2e.test_cli import PASSWORD, tillbox
from tests.postgres import truncate_all

pytestmark = pytest.mark.postgres


@pytest.fixture
def store(postgres_url: str, tmp_path: Path) -> dict[str, str]:
    """The environment of commands on an empty PostgreSQL store."""
    asyncio.run(truncate_all(postgres_url))
    return {"TILLBOX_DATABASE_URL": postgres_url, "TILLBOX_DATA_DIR": str(tmp_path / "data")}


def _query(url: str, sql: str) -> list[tuple[object, ...]]:
    async def run() -> list[tuple[object, ...]]:
        conn = await asyncpg.connect(url)
        try:
            return [tuple(row) for row in await conn.fetch(sql)]
        finally:
            await conn.close()

    return asyncio.run(run())


def _create_admin(tmp_path: Path, env: dict[str, str], email: str = "admin@example.com") -> None:
    args = ("users", "create", "--email", email, "--role", "admin", "--password-stdin")
    result = tillbox(*args, cwd=tmp_path, stdin=PASSWORD + "\n", env=env)
    assert result.returncode == 0, result.stderr


def test_instances_migrating_at_once_apply_each_migration_once(
    postgres_url: str, store: dict[str, str], tmp_path: Path
) -> None:
    _query(postgres_url, "DROP TABLE IF EXISTS _migrations")  # a store no migration ever ran on
    tables = [row[0] for row in _query(postgres_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    _query(postgres_url, f"DROP TABLE IF EXISTS {', '.join(tables) or 'nothing'} CASCADE")
    for function in ("audit_log_append_only()", "refunds_within_captured()", "tillbox_name_key(text)"):
        _query(postgres_url, f"DROP FUNCTION IF EXISTS {function} CASCADE")

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: tillbox("db", "migrate", cwd=tmp_path, env=store), range(4)))

    assert [r.returncode for r in results] == [0] * 4, [r.stderr for r in results]
    assert {r.stdout.strip().rsplit(" ", 1)[-1] for r in results} == {str(LATEST_VERSION)}
    assert _query(postgres_url, "SELECT version FROM _migrations ORDER BY version") == [
        (v,) for v in range(1, LATEST_VERSION + 1)
    ]


def test_reset_empties_the_store_and_users_and_keys_work(
    postgres_url: str, store: dict[str, str], tmp_path: Path
) -> None:
    _create_admin(tmp_path, store)
    listed = tillbox("users", "list", "--json", cwd=tmp_path, env=store)
    assert listed.returncode == 0, listed.stderr
    assert "admin@example.com" in listed.stdout
    rotated = tillbox("keys", "rotate", cwd=tmp_path, env=store)
    assert rotated.returncode == 0, rotated.stderr
    assert _query(postgres_url, "SELECT count(*) FROM signing_keys") == [(2,)]
    assert not (tmp_path / "data" / "keys").exists()  # the keys are the store's, not the host's

    reset = tillbox("db", "reset", "--yes", cwd=tmp_path, env=store)
    assert reset.returncode == 0, reset.stderr
    assert reset.stdout.strip().endswith(f"is empty, at schema version {LATEST_VERSION}")
    assert "@" not in reset.stdout  # no credentials, no URL
    assert _query(postgres_url, "SELECT count(*) FROM users") == [(0,)]


def test_backup_and_restore_go_through_pg_dump_and_pg_restore(
    postgres_url: str, store: dict[str, str], tmp_path: Path
) -> None:
    _create_admin(tmp_path, store, "kept@example.com")
    backup = tmp_path / "shop.dump"
    made = tillbox("backup", str(backup), cwd=tmp_path, env=store)
    assert made.returncode == 0, made.stderr
    assert "with pg_dump" in made.stdout
    assert backup.stat().st_size > 0
    refused = tillbox("backup", str(backup), cwd=tmp_path, env=store)
    assert refused.returncode == 1
    assert refused.stderr.strip() == f"tillbox: error: {backup} exists; choose another path or pass --force"

    _create_admin(tmp_path, store, "after-the-backup@example.com")
    restored = tillbox("restore", str(backup), "--yes", cwd=tmp_path, env=store)
    assert restored.returncode == 0, restored.stderr
    assert _query(postgres_url, "SELECT email FROM users") == [("kept@example.com",)]


def test_restore_refuses_a_file_that_is_not_a_backup_and_changes_nothing(
    postgres_url: str, store: dict[str, str], tmp_path: Path
) -> None:
    _create_admin(tmp_path, store)
    junk = tmp_path / "junk.dump"
    junk.write_bytes(b"not a dump")
    result = tillbox("restore", str(junk), "--yes", cwd=tmp_path, env=store)
    assert result.returncode == 1
    assert result.stderr.startswith(f"tillbox: error: {junk} is not a Tillbox backup")
    assert _query(postgres_url, "SELECT email FROM users") == [("admin@example.com",)]


def test_without_pg_dump_backup_says_what_to_run_instead(store: dict[str, str], tmp_path: Path) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()  # a PATH with no PostgreSQL client tools
    env = {**store, "PATH": str(bare)}
    result = tillbox("backup", str(tmp_path / "shop.dump"), cwd=tmp_path, env=env)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("tillbox: error: pg_dump is not installed here; install the PostgreSQL client tools, or run")
    assert not (tmp_path / "shop.dump").exists()
    assert subprocess.run(["which", "pg_dump"], capture_output=True, check=False, env=os.environ).returncode == 0

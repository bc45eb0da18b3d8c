"""A store made by the previous release (schema 5) opened by this one: migration 6 brings
emails to the form sign-in compares, gives accounts their look-alike keys, and leaves no
trace of the unkeyed request fingerprints in the file."""

from __future__ import annotations

import hashlib
import pathlib
import sqlite3
import unicodedata
from datetime import UTC, datetime

import pytest

from adapters.sqlite import LATEST_VERSION, SqliteDatabase, migrate, schema_version
from adapters.sqlite import migrations as migrations_module
from tests.fakes import FixedClock

T = "2026-01-01T00:00:00.000000Z"


def _store_of_the_previous_release(path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patched:
        patched.setattr(migrations_module, "MIGRATIONS", migrations_module.MIGRATIONS[:5])
        patched.setattr(migrations_module, "LATEST_VERSION", 5)
        assert migrations_module.migrate(path) == 5


def _add_user(conn: sqlite3.Connection, user_id: str, email: str) -> None:
    conn.execute(
        "INSERT INTO users (id, email, password_hash, role, status, created_at, updated_at)"
        " VALUES (?, ?, 'fake$', 'customer', 'active', ?, ?)",
        (user_id, email, T, T),
    )


def test_emails_are_brought_to_their_new_form_and_get_their_look_alike_keys(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tillbox.db"
    _store_of_the_previous_release(path, monkeypatch)
    nfd = unicodedata.normalize("NFD", "josé@example.com")
    conn = sqlite3.connect(path, isolation_level=None)
    _add_user(conn, "usr_1", nfd)  # stored lower-cased only, as the previous release did
    _add_user(conn, "usr_2", "ｋate@example.com")  # fullwidth ｋ: its new form is usr_3's address
    _add_user(conn, "usr_3", "kate@example.com")
    _add_user(conn, "usr_4", "kаte@example.com")  # Cyrillic а: looks like kate
    _add_user(conn, "usr_5", "ｂob@example.com")  # fullwidth ｂ, no one else's: becomes bob
    conn.close()

    assert migrate(path) == LATEST_VERSION

    conn = sqlite3.connect(path)
    rows = dict(conn.execute("SELECT id, email FROM users").fetchall())
    skeletons = dict(conn.execute("SELECT id, email_skeleton FROM users").fetchall())
    conn.close()
    assert rows["usr_1"] == "josé@example.com" and rows["usr_1"] == unicodedata.normalize("NFC", rows["usr_1"])
    assert rows["usr_5"] == "bob@example.com"  # signs in as typed, and as anyone types it now
    # Taken by another account: kept as it was (that account owns the plain address).
    assert (rows["usr_2"], rows["usr_3"]) == ("ｋate@example.com", "kate@example.com")
    # Of the accounts that look alike, the oldest keeps the key; the others have none (and
    # no new account can look like any of them).
    assert skeletons["usr_2"] == "kate@exarnple.corn"
    assert skeletons["usr_3"] is None and skeletons["usr_4"] is None
    assert None not in (skeletons["usr_1"], skeletons["usr_5"])


def test_wiped_fingerprints_leave_no_trace_in_the_file(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tillbox.db"
    _store_of_the_previous_release(path, monkeypatch)
    legacy = [
        hashlib.sha256(f"POST /api/v1/auth/register\n{{'password': 'secret {n}'}}".encode()).hexdigest()
        for n in range(30)
    ]
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA secure_delete = OFF")  # as on builds of SQLite without it (Debian's has it)
    for n, fingerprint in enumerate(legacy):
        conn.execute(
            "INSERT INTO idempotency_keys (scope, key, fingerprint, created_at) VALUES ('ip:1', ?, ?, ?)",
            (f"key-{n}", fingerprint, T),
        )
    conn.close()

    assert migrate(path) == LATEST_VERSION
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert conn.execute("SELECT count(*) FROM idempotency_keys WHERE fingerprint = ''").fetchone() == (30,)
    conn.close()
    written = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert not any(f.encode() in written for f in legacy)
    assert schema_version(path) == LATEST_VERSION


async def test_sessions_made_before_oauth_grants_stay_first_party(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A store at schema 11 (OAuth clients, no grants yet): its refresh tokens become first-party
    # sessions, neither a client's nor bounded by scopes, and keep working.
    path = tmp_path / "tillbox.db"
    with monkeypatch.context() as patched:
        patched.setattr(migrations_module, "MIGRATIONS", migrations_module.MIGRATIONS[:11])
        patched.setattr(migrations_module, "LATEST_VERSION", 11)
        assert migrations_module.migrate(path) == 11
    conn = sqlite3.connect(path, isolation_level=None)
    _add_user(conn, "usr_1", "ada@example.com")
    conn.execute(
        "INSERT INTO refresh_tokens (id, user_id, family_id, token_digest, created_at, expires_at, used_at, revoked_at)"
        " VALUES ('rtk_1', 'usr_1', 'fam_1', 'digest-1', ?, ?, NULL, NULL)",
        (T, "2026-01-31T00:00:00.000000Z"),
    )
    conn.close()

    assert migrate(path) == LATEST_VERSION

    conn = sqlite3.connect(path)
    assert conn.execute("SELECT id, client_id, scope FROM refresh_tokens").fetchall() == [("rtk_1", None, None)]
    conn.close()
    db = SqliteDatabase(path, clock=FixedClock(datetime(2026, 1, 2, tzinfo=UTC)))
    await db.open()
    try:
        async with db() as uow:
            token = await uow.refresh_tokens.get_by_digest("digest-1")
            assert token is not None
            assert (token.user_id, token.client_id, token.scope) == ("usr_1", None, None)
            assert await uow.refresh_tokens.mark_used("rtk_1", datetime(2026, 1, 2, tzinfo=UTC)) is True
            assert await uow.refresh_tokens.client_families_since("cli_1", None, datetime(2025, 1, 1, tzinfo=UTC)) == []
            await uow.commit()
    finally:
        await db.close()

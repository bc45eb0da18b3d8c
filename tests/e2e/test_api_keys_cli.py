"""``tillbox keys api ...`` as an operator runs it, with a server using the keys it makes."""

from __future__ import annotations

import json
import sqlite3
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_cli import create_user, tillbox
from tests.harness import Server

FIELDS = {"id", "user_id", "name", "scopes", "created_at", "expires_at", "last_used_at", "revoked_at"}


@pytest.fixture
def admin_dir(tmp_path: Path) -> Path:
    create_user(tmp_path)  # admin@example.com
    return tmp_path


def _get(url: str, token: str) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _audit(data: Path) -> list[tuple[str, Any, str, str]]:
    with sqlite3.connect(data / "tillbox-data" / "tillbox.db") as db:
        rows = db.execute(
            "SELECT action, actor_id, source_ip, details FROM audit_log WHERE object_type = 'api_key' ORDER BY id"
        ).fetchall()
    return [(action, actor, source, details) for action, actor, source, details in rows]


@pytest.fixture
def server(admin_dir: Path) -> Iterator[Server]:
    with Server(admin_dir) as running:
        yield running


def test_create_prints_the_secret_once_and_it_works_until_revoked(admin_dir: Path, server: Server) -> None:
    created = tillbox(
        "keys", "api", "create", "--user", "ADMIN@example.com", "--name", "stock export",
        "--scope", "orders:read catalog:read", "--scope", "audit:read", "--expires-in", "90",
        cwd=admin_dir,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    lines = created.stdout.splitlines()
    assert (
        lines[0].startswith("created API key key_") and "('stock export') for ADMIN@example.com, expires " in lines[0]
    )
    assert lines[1] == "scopes: catalog:read orders:read audit:read"
    secret = lines[2]
    assert secret.startswith("tbk_") and len(secret) >= 47
    assert lines[3] == "This secret will not be shown again: store it now (send it as Authorization: Bearer <secret>)."
    assert len(lines) == 4
    key_id = lines[0].split()[3]

    status, products = _get(server.base + "/api/v1/products", secret)
    assert (status, products["data"]) == (200, [])
    status, body = _get(server.base + "/api/v1/users", secret)
    assert (status, body["error"]["code"]) == (403, "insufficient_scope")

    listing = tillbox("keys", "api", "list", cwd=admin_dir)
    assert listing.returncode == 0, listing.stderr
    header, row = listing.stdout.splitlines()
    assert header.split() == ["id", "owner", "name", "state", "expires", "last", "used", "scopes"]
    assert secret not in listing.stdout
    assert row.startswith(f"{key_id}  admin@example.com")
    assert " active " in row and row.endswith("catalog:read orders:read audit:read")
    assert " never " not in row  # the server recorded its use
    listed = json.loads(tillbox("keys", "api", "list", "--user", "admin@example.com", "--json", cwd=admin_dir).stdout)
    assert [set(k) for k in listed] == [FIELDS]
    assert listed[0]["id"] == key_id and listed[0]["last_used_at"] is not None

    revoked = tillbox("keys", "api", "revoke", key_id, cwd=admin_dir)
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout == f"revoked API key {key_id} ('stock export'); it is refused from the next request on\n"
    status, body = _get(server.base + "/api/v1/products", secret)
    assert (status, body["error"]["code"]) == (401, "invalid_token")
    rows = tillbox("keys", "api", "list", cwd=admin_dir).stdout.splitlines()[1:]
    assert [" revoked " in row for row in rows] == [True]

    audit = _audit(admin_dir)
    assert [(a, actor, source) for a, actor, source, _ in audit] == [
        ("api_key.created", None, "cli"),
        ("api_key.revoked", None, "cli"),
    ]
    assert secret not in audit[0][3]


def test_create_as_json_and_list_per_user(admin_dir: Path) -> None:
    create_user(admin_dir, "second@example.com", "admin")
    result = tillbox(
        "keys", "api", "create", "--user", "second@example.com", "--name", "n", "--scope", "catalog:read",
        "--expires-in", "1", "--json", cwd=admin_dir,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    key = json.loads(result.stdout)
    assert set(key) == FIELDS | {"secret"} and key["secret"].startswith("tbk_")
    assert key["scopes"] == ["catalog:read"]
    assert (
        json.loads(tillbox("keys", "api", "list", "--user", "admin@example.com", "--json", cwd=admin_dir).stdout) == []
    )
    mine = json.loads(tillbox("keys", "api", "list", "--user", "second@example.com", "--json", cwd=admin_dir).stdout)
    assert [k["id"] for k in mine] == [key["id"]]
    everyone = json.loads(tillbox("keys", "api", "list", "--json", cwd=admin_dir).stdout)
    assert [k["id"] for k in everyone] == [key["id"]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--user", "nobody@example.com"), "No user with email 'nobody@example.com'. (user_not_found)"),
        (("--user", "staff@example.com"), "Only admins have personal API keys. (forbidden)"),
        (("--scope", "catalog:fly"), "Unknown scope: catalog:fly. (invalid_scope)"),
        (("--expires-in", "400"), "expires_in_days must be at most 365 days ahead. (validation_failed)"),
        (("--expires-in", "0"), "expires_in_days must be at least one hour ahead. (validation_failed)"),
        (("--name", " "), "name must not be empty. (validation_failed)"),
    ],
)
def test_create_refuses_bad_input_in_one_line_and_makes_nothing(
    admin_dir: Path, args: tuple[str, ...], message: str
) -> None:
    create_user(admin_dir, "staff@example.com", "staff")
    given = {"--user": "admin@example.com", "--name": "n", "--scope": "catalog:read", "--expires-in": "30"}
    given.update(dict(zip(args[::2], args[1::2], strict=True)))
    result = tillbox("keys", "api", "create", *(part for pair in given.items() for part in pair), cwd=admin_dir)
    assert result.returncode == 1
    assert result.stderr == f"tillbox: error: {message}\n"
    assert result.stdout == ""
    assert json.loads(tillbox("keys", "api", "list", "--json", cwd=admin_dir).stdout) == []


def test_revoke_of_an_unknown_key_fails_in_one_line(admin_dir: Path) -> None:
    result = tillbox("keys", "api", "revoke", "key_unknown", cwd=admin_dir)
    assert result.returncode == 1
    assert result.stderr == "tillbox: error: No API key 'key_unknown'. (api_key_not_found)\n"


def test_create_without_a_scope_is_a_usage_error(admin_dir: Path) -> None:
    result = tillbox("keys", "api", "create", "--user", "admin@example.com", "--name", "n", "--expires-in", "3",
                     cwd=admin_dir)  # fmt: skip
    assert result.returncode == 2
    assert "--scope" in result.stderr

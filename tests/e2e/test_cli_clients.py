"""``tillbox clients``: the operator's OAuth client registry, as real processes on a real data
directory; the secret printed once and stored nowhere, every change audited as the operator."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_cli import tillbox

NOT_SHOWN_AGAIN = "This secret will not be shown again"
CREATE = (
    "clients",
    "create",
    "--name",
    "Reports",
    "--type",
    "confidential",
    "--redirect-uri",
    "https://reports.example.com/cb",
    "--redirect-uri",
    "http://127.0.0.1:8400/cb",
    "--grant",
    "authorization_code",
    "--grant",
    "refresh_token",
    "--scope",
    "orders:read catalog:read",
    "--scope",
    "users:read",
)


def _db(directory: Path) -> sqlite3.Connection:
    return sqlite3.connect(directory / "tillbox-data" / "tillbox.db")


def _written(directory: Path) -> list[tuple[Any, ...]]:
    """Everything a clients command could write: the clients and the audit log."""
    with _db(directory) as db:
        return [
            *db.execute("SELECT * FROM oauth_clients ORDER BY id"),
            *db.execute("SELECT * FROM audit_log ORDER BY id"),
        ]


@pytest.fixture
def registered(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    result = tillbox(*CREATE, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return tmp_path, json.loads(result.stdout)


def test_create_prints_the_secret_once_and_stores_only_a_digest(tmp_path: Path) -> None:
    result = tillbox(*CREATE, cwd=tmp_path)

    assert (result.returncode, result.stderr) == (0, "")
    first, second, third = result.stdout.splitlines()
    assert first.startswith("registered confidential client Reports (cli_") and first.endswith(")")
    client_id = first.rsplit("(", 1)[1].rstrip(")")
    assert second.startswith("client secret: tbcs_")
    secret = second.removeprefix("client secret: ")
    assert len(secret) == 48
    assert third == (
        f"{NOT_SHOWN_AGAIN}: store it now (Tillbox keeps only a digest of it;"
        f" `tillbox clients rotate-secret {client_id}` makes a new one)."
    )
    with _db(tmp_path) as db:
        (row,) = db.execute("SELECT id, type, redirect_uris, grant_types, scopes, secret_digest FROM oauth_clients")
        audit = db.execute("SELECT actor_id, source_ip, action, object_id FROM audit_log").fetchall()
    assert row[:5] == (
        client_id,
        "confidential",
        '["https://reports.example.com/cb","http://127.0.0.1:8400/cb"]',
        '["authorization_code","refresh_token"]',
        '["catalog:read","orders:read","users:read"]',
    )
    assert row[5] and secret not in str(_written(tmp_path))
    assert audit == [(None, "cli", "oauth_client.registered", client_id)]


def test_create_json_is_what_show_and_list_print_with_the_secret(registered: tuple[Path, dict[str, Any]]) -> None:
    directory, made = registered
    secret = made.pop("client_secret")
    assert secret.startswith("tbcs_")
    assert made["created_by"] is None and made["scopes"] == ["catalog:read", "orders:read", "users:read"]

    shown = tillbox("clients", "show", made["id"], "--json", cwd=directory)
    listed = tillbox("clients", "list", "--json", cwd=directory)
    active = tillbox("clients", "list", "--json", "--status", "active", cwd=directory)
    disabled = tillbox("clients", "list", "--json", "--status", "disabled", cwd=directory)

    assert json.loads(shown.stdout) == made
    assert json.loads(listed.stdout) == json.loads(active.stdout) == [made]
    assert (disabled.returncode, disabled.stdout) == (0, "[]\n")
    assert secret not in shown.stdout + listed.stdout


def test_a_public_client_has_no_secret_to_print_or_rotate(tmp_path: Path) -> None:
    result = tillbox(
        "clients",
        "create",
        "--name",
        "Mobile",
        "--type",
        "public",
        "--redirect-uri",
        "http://[::1]:7000/cb",
        "--grant",
        "authorization_code",
        "--scope",
        "catalog:read",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("registered public client Mobile (cli_")
    assert "secret" not in result.stdout
    client_id = result.stdout.strip().rsplit("(", 1)[1].rstrip(")")
    before = _written(tmp_path)

    rotated = tillbox("clients", "rotate-secret", client_id, cwd=tmp_path)

    assert (rotated.returncode, rotated.stdout) == (1, "")
    assert rotated.stderr == "tillbox: error: A public client has no secret: it cannot keep one. (client_is_public)\n"
    assert _written(tmp_path) == before


def test_list_and_show_for_people(registered: tuple[Path, dict[str, Any]]) -> None:
    directory, made = registered
    listing = tillbox("clients", "list", cwd=directory)
    shown = tillbox("clients", "show", made["id"], cwd=directory)

    header, row = listing.stdout.splitlines()
    assert header.split() == ["id", "name", "type", "status", "created"]
    assert row.split()[:4] == [made["id"], "Reports", "confidential", "active"]
    lines = dict(line.split(":", 1) for line in shown.stdout.splitlines())
    assert {key: value.strip() for key, value in lines.items() if key != "secret made" and key != "created"} == {
        "id": made["id"],
        "name": "Reports",
        "type": "confidential",
        "status": "active",
        "redirect uris": "https://reports.example.com/cb http://127.0.0.1:8400/cb",
        "grant types": "authorization_code refresh_token",
        "scopes": "catalog:read orders:read users:read",
        "created by": "the operator",
    }


def test_disable_enable_and_rotate(registered: tuple[Path, dict[str, Any]]) -> None:
    directory, made = registered
    client_id = made["id"]

    disabled = tillbox("clients", "disable", client_id, cwd=directory)
    again = tillbox("clients", "disable", client_id, cwd=directory)
    enabled = tillbox("clients", "enable", client_id, cwd=directory)
    enabled_again = tillbox("clients", "enable", client_id, cwd=directory)
    rotated = tillbox("clients", "rotate-secret", client_id, "--json", cwd=directory)

    assert disabled.stdout == f"disabled Reports ({client_id}); its secret no longer authenticates it\n"
    assert again.stdout == f"Reports ({client_id}) was already disabled\n"
    assert enabled.stdout == f"enabled Reports ({client_id})\n"
    assert enabled_again.stdout == f"Reports ({client_id}) was already active\n"
    assert rotated.returncode == 0, rotated.stderr
    new = json.loads(rotated.stdout)
    assert new["client_secret"].startswith("tbcs_") and new["client_secret"] != made["client_secret"]
    assert rotated.stderr.startswith(NOT_SHOWN_AGAIN)
    with _db(directory) as db:
        actions = db.execute("SELECT actor_id, source_ip, action FROM audit_log ORDER BY id").fetchall()
    assert actions == [
        (None, "cli", "oauth_client.registered"),
        (None, "cli", "oauth_client.disabled"),
        (None, "cli", "oauth_client.enabled"),
        (None, "cli", "oauth_client.secret_rotated"),
    ]


@pytest.mark.parametrize("command", ["show", "disable", "enable", "rotate-secret"])
def test_an_unknown_client_is_one_line_and_changes_nothing(
    registered: tuple[Path, dict[str, Any]], command: str
) -> None:
    directory, _ = registered
    before = _written(directory)

    result = tillbox("clients", command, "cli_nobody", cwd=directory)

    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "tillbox: error: No OAuth client with id 'cli_nobody'. (oauth_client_not_found)\n"
    assert _written(directory) == before


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"--redirect-uri": "https://reports.example.com/cb#x"},
            "redirect_uris[0] must not have a fragment (#...). (validation_failed)",
        ),
        (
            {"--redirect-uri": "http://reports.example.com/cb"},
            "redirect_uris[0] must be https (http only on a loopback host: 127.0.0.1, [::1], localhost)."
            " (validation_failed)",
        ),
        ({"--scope": "orders:read everything"}, "scopes has unknown scopes: everything. (validation_failed)"),
        (
            {"--type": "public", "--grant": "client_credentials"},
            "grant_types client_credentials is only for confidential clients. (validation_failed)",
        ),
        (
            {"--name": " ", "--grant": "refresh_token"},
            "name must not be empty; grant_types refresh_token needs authorization_code. (validation_failed)",
        ),
    ],
)
def test_bad_registrations_are_one_line_and_write_nothing(
    registered: tuple[Path, dict[str, Any]], change: dict[str, str], message: str
) -> None:
    directory, _ = registered
    before = _written(directory)
    options = {"--name": "Bad", "--type": "confidential", "--redirect-uri": "https://a.example/cb"}
    options |= {"--grant": "authorization_code", "--scope": "catalog:read"} | change
    args = [part for option, value in options.items() for part in (option, value)]

    result = tillbox("clients", "create", *args, cwd=directory)

    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"tillbox: error: {message}\n"
    assert _written(directory) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("clients", "create", "--name", "x"), "the following arguments are required: --type, --redirect-uri"),
        (("clients", "create", *CREATE[2:4], "--type", "secret"), "argument --type: invalid choice: 'secret'"),
        (("clients", "create", *CREATE[2:], "--grant", "password"), "argument --grant: invalid choice: 'password'"),
        (("clients", "list", "--status", "gone"), "argument --status: invalid choice: 'gone'"),
        (("clients", "show"), "the following arguments are required: id"),
        (("clients", "rotate-secret"), "the following arguments are required: id"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    result = tillbox(*args, cwd=tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith("usage: tillbox clients")
    assert message in result.stderr
    assert not (tmp_path / "tillbox-data").exists()

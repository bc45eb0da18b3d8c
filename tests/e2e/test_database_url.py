"""A ``database.url`` that names no store Tillbox has, or a PostgreSQL server that cannot be
reached: every command that opens the store refuses it with one line (never the URL, which
holds a password) before creating or opening anything, instead of quietly using SQLite.
The commands that open nothing still work."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from entrypoints.cli import build_parser, main
from tests.e2e.test_cli import COMMANDS, tillbox

URL = "mysql://shop:s3cret-pw@db.example/shop"
#: Nothing listens on port 1 of this machine: connecting is refused at once.
UNREACHABLE = "postgresql://shop:s3cret-pw@127.0.0.1:1/shop"

# Every command that opens the store, with arguments that would otherwise let it run.
STORE_COMMANDS: dict[tuple[str, ...], list[str]] = {
    ("serve",): [],
    ("admin",): [],
    ("db", "migrate"): [],
    ("db", "seed"): ["--count", "1"],
    ("db", "reset"): ["--yes"],
    ("users", "create"): ["--email", "admin@example.com", "--role", "admin", "--password-stdin"],
    ("users", "list"): [],
    ("users", "disable"): ["--email", "someone@example.com"],
    ("users", "enable"): ["--email", "someone@example.com"],
    ("users", "set-role"): ["--email", "someone@example.com", "--role", "staff"],
    ("users", "reset-password"): ["--email", "someone@example.com", "--password-stdin"],
    ("clients", "create"): [
        *("--name", "Reports", "--type", "confidential", "--redirect-uri", "https://reports.example.com/cb"),
        *("--grant", "client_credentials", "--scope", "orders:read"),
    ],
    ("clients", "list"): [],
    ("clients", "show"): ["cli_x"],
    ("clients", "disable"): ["cli_x"],
    ("clients", "enable"): ["cli_x"],
    ("clients", "rotate-secret"): ["cli_x"],
    ("keys", "rotate"): [],
    ("keys", "api", "create"): [
        *("--user", "admin@example.com", "--name", "n"),
        *("--scope", "catalog:read", "--expires-in", "30"),
    ],
    ("keys", "api", "list"): [],
    ("keys", "api", "revoke"): ["key_1"],
    ("backup",): ["backup.db"],
    ("restore",): ["backup.db", "--yes"],
}
OTHER_COMMANDS = {("openapi",), ("config", "show"), ("version",)}


def test_every_command_is_classified() -> None:
    opens = {
        command
        for command in COMMANDS
        if build_parser().parse_args([*command, *STORE_COMMANDS.get(command, [])]).opens_store
    }
    assert opens == set(STORE_COMMANDS), (
        "a command that opens the store must refuse a database.url (and be listed here)"
    )
    assert set(COMMANDS) - opens == OTHER_COMMANDS


@pytest.mark.parametrize("command", sorted(STORE_COMMANDS), ids=" ".join)
def test_a_database_url_is_refused_at_start_with_one_line(
    command: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("TILLBOX_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TILLBOX_DATABASE_URL", URL)
    (tmp_path / "backup.db").write_bytes(b"")
    with pytest.raises(SystemExit) as exit:
        main([*command, *STORE_COMMANDS[command]])
    assert exit.value.code == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "tillbox: error: database.url (environment TILLBOX_DATABASE_URL) names a mysql database, "
        "but Tillbox stores its data in PostgreSQL (a postgresql:// URL) or, with database.url empty, "
        f"in SQLite in {tmp_path / 'tillbox-data'}\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup.db"]  # no data directory, no database


def test_the_refusal_names_the_config_file_and_never_shows_the_url(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(f'[database]\nurl = "{URL}"\n')
    result = tillbox("serve", cwd=tmp_path)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("tillbox: error: database.url (config file config.toml) names a mysql database")
    assert "s3cret" not in result.stderr + result.stdout
    assert not (tmp_path / "tillbox-data").exists()


def test_a_url_that_is_not_one_is_refused_too(tmp_path: Path) -> None:
    result = tillbox("db", "migrate", cwd=tmp_path, env={"TILLBOX_DATABASE_URL": "/var/lib/tillbox.db"})
    assert result.returncode == 1
    assert result.stderr.startswith("tillbox: error: database.url (environment TILLBOX_DATABASE_URL) is set, but")
    assert "/var/lib/tillbox.db" not in result.stderr


def test_commands_that_open_no_store_still_work(tmp_path: Path) -> None:
    env = {"TILLBOX_DATABASE_URL": URL}
    shown = tillbox("config", "show", cwd=tmp_path, env=env)
    assert shown.returncode == 0, shown.stderr
    assert 'url = "********"  # environment TILLBOX_DATABASE_URL' in shown.stdout
    assert tillbox("version", cwd=tmp_path, env=env).returncode == 0
    assert tillbox("openapi", cwd=tmp_path, env=env).returncode == 0
    assert not (tmp_path / "tillbox-data").exists()


# Commands that reach the store through the server's connection and say at start that they
# cannot: not backup and restore (they drive pg_dump or pg_restore, which say so in their own
# line, tested with the PostgreSQL suites), nor admin (the console comes up and says so on its
# sign-in screen, tests/console/test_signin.py).
CONNECTING = sorted(command for command in STORE_COMMANDS if command not in {("backup",), ("restore",), ("admin",)})


@pytest.mark.parametrize("command", CONNECTING, ids=" ".join)
def test_an_unreachable_postgresql_server_is_one_line_at_start(
    command: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("TILLBOX_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TILLBOX_DATABASE_URL", UNREACHABLE)
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough password\n"))
    with pytest.raises(SystemExit) as exit:
        main([*command, *STORE_COMMANDS[command]])
    assert exit.value.code == 1
    out, err = capsys.readouterr()
    assert out == ""
    [line] = err.splitlines()
    assert line.startswith("tillbox: error: cannot connect to the PostgreSQL "), line
    assert "(database_unavailable)" in line
    assert "s3cret" not in err

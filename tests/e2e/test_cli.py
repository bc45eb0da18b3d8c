"""The ``tillbox`` command as an operator runs it: a real process, a real data directory."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import urllib.request
from pathlib import Path

import pytest

from entrypoints.cli import build_parser
from tests.harness import Server, environment, run_tillbox

PASSWORD = "an operator passphrase"


def tillbox(
    *args: str, cwd: Path, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_tillbox(*args, cwd=cwd, stdin=stdin, env=environment(env), timeout=60)


def _commands(parser: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    import argparse

    found = []
    for action in getattr(parser, "_actions", []):
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
                    found += _commands(sub, (*prefix, name))
                else:
                    found.append((*prefix, name))
    return found


COMMANDS = _commands(build_parser())


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_an_example(command: tuple[str, ...], tmp_path: Path) -> None:
    result = tillbox(*command, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "example:" in result.stdout
    assert "tillbox " + " ".join(command) in result.stdout.split("example:")[1]


def test_version(tmp_path: Path) -> None:
    result = tillbox("version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("tillbox 0.")


@pytest.mark.parametrize(
    ("config", "env", "message"),
    [
        ("[server]\nprot = 1\n", {}, "unknown key 'prot' in [server]"),
        ("[nonsense]\n", {}, "unknown section [nonsense]"),
        ("[server\nport = 1", {}, "is not valid TOML"),
        ('[server]\nport = "eighty"\n', {}, "server.port must be a whole number"),
        ("", {"TILLBOX_SERVER_PORT": "eighty"}, "TILLBOX_SERVER_PORT must be a whole number"),
        ("", {"TILLBOX_SERVER_PROT": "1"}, "TILLBOX_SERVER_PROT is not a Tillbox setting"),
        ("", {"TILLBOX_AUTH_ARGON2_MEMORY_KIB": "1024"}, "auth.argon2_memory_kib must be between"),
    ],
)
def test_bad_settings_are_one_clear_line(tmp_path: Path, config: str, env: dict[str, str], message: str) -> None:
    (tmp_path / "config.toml").write_text(config)
    result = tillbox("db", "migrate", cwd=tmp_path, env=env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tillbox: error: ")
    assert message in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "tillbox-data").exists()


def test_users_create_refuses_bad_input_in_one_line(tmp_path: Path) -> None:
    result = tillbox(
        "users",
        "create",
        "--email",
        "a@example.com",
        "--role",
        "admin",
        "--password-stdin",
        cwd=tmp_path,
        stdin="short\n",
    )
    assert result.returncode == 1
    assert result.stderr.startswith("tillbox: error: ")
    assert "(validation_failed)" in result.stderr or "(weak_password)" in result.stderr
    result = tillbox(
        "users", "create", "--email", "not-an-email", "--password-stdin", cwd=tmp_path, stdin=PASSWORD + "\n"
    )
    assert result.returncode == 1
    assert "(invalid_email)" in result.stderr


def _get(url: str, token: str | None = None) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, json.loads(response.read())


def _post(url: str, body: dict[str, object], token: str | None = None) -> tuple[int, dict[str, object]]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, json.loads(response.read())


def create_user(cwd: Path, email: str = "admin@example.com", role: str = "admin") -> str:
    """``tillbox users create`` in ``cwd``; what it printed."""
    args = ("users", "create", "--email", email, "--role", role, "--password-stdin")
    created = tillbox(*args, cwd=cwd, stdin=PASSWORD + "\n")
    assert created.returncode == 0, created.stderr
    return created.stdout


def test_operator_flow_and_graceful_stop(tmp_path: Path) -> None:
    assert "created admin admin@example.com" in create_user(tmp_path)
    data = tmp_path / "tillbox-data"
    assert data.stat().st_mode & 0o777 == 0o700
    assert (data / "tillbox.db").stat().st_mode & 0o077 == 0

    seeded = tillbox("db", "seed", "--count", "50", cwd=tmp_path)
    assert seeded.returncode == 0, seeded.stderr
    assert "seeded 50 products" in seeded.stdout

    with Server(tmp_path) as server:
        base = server.base
        listening = [entry for entry in server.log() if entry.get("message") == "listening"]
        assert [entry["url"] for entry in listening] == [base]  # the port it bound, not the 0 it was given
        assert server.port > 0
        _, tokens = _post(base + "/api/v1/auth/login", {"email": "admin@example.com", "password": PASSWORD})
        token = str(tokens["access_token"])
        status, product = _post(
            base + "/api/v1/products", {"sku": "CLI-1", "name": "From the CLI test", "price": 500}, token
        )
        assert status == 201
        _, page = _get(base + "/api/v1/products?q=CLI", token)
        assert [p["sku"] for p in page["data"]] == ["CLI-1"]  # type: ignore[index,union-attr]
        assert (data / "keys").stat().st_mode & 0o777 == 0o700

        assert server.stop() == 0
        assert "Traceback" not in server.stderr
    with sqlite3.connect(data / "tillbox.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT count(*) FROM products").fetchone() == (51,)


def test_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = tillbox("serve", "--port", str(port), cwd=tmp_path)
    assert result.returncode == 1
    assert f"tillbox: error: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr

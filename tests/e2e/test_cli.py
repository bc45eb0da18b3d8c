"""The ``tillbox`` command as an operator runs it: a real process, a real data directory."""

from __future__ import annotations

import argparse
import json
import re
import socket
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from entrypoints.cli import build_parser
from entrypoints.settings import DEFAULTS
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


def _parser_of(command: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in command:
        subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = subparsers.choices[name]
    return parser


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_an_example(command: tuple[str, ...], tmp_path: Path) -> None:
    result = tillbox(*command, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "example:" in result.stdout
    assert "tillbox " + " ".join(command) in result.stdout.split("example:")[1]


@pytest.mark.parametrize("command", [(), *COMMANDS], ids=lambda c: " ".join(c) or "tillbox")
def test_every_option_has_help_and_shows_its_default(command: tuple[str, ...], tmp_path: Path) -> None:
    result = tillbox(*command, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    shown = " ".join(result.stdout.split())  # as if argparse had not wrapped the lines
    for action in _parser_of(command)._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        assert action.help, f"{action.dest} has no help"
        assert " ".join(action.help.split()) in shown
        if action.default not in (None, False, argparse.SUPPRESS):
            assert f"(default: {action.default})" in shown, action.dest


@pytest.mark.parametrize(("flag", "key"), [("--host", "host"), ("--port", "port"), ("--workers", "workers")])
def test_serve_flags_name_the_setting_they_override_and_its_default(tmp_path: Path, flag: str, key: str) -> None:
    shown = " ".join(tillbox("serve", "--help", cwd=tmp_path).stdout.split())
    default = DEFAULTS["server"][key]
    assert re.search(
        rf"  ?{flag} [A-Z]+ [^(]+ \(default: the server\.{key} setting, {default} unless configured\)", shown
    )


def test_version(tmp_path: Path) -> None:
    result = tillbox("version", cwd=tmp_path)
    assert result.returncode == 0
    assert re.fullmatch(r"tillbox 0\.\d+\.\d+( \(commit [0-9a-f]+\))?\n", result.stdout), result.stdout


def test_version_flag_prints_what_the_version_command_does(tmp_path: Path) -> None:
    flag = tillbox("--version", cwd=tmp_path)
    assert (flag.returncode, flag.stderr) == (0, "")
    assert flag.stdout == tillbox("version", cwd=tmp_path).stdout
    assert not (tmp_path / "tillbox-data").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("frobnicate",), "invalid choice: 'frobnicate'"),
        (("serve", "--prot", "1"), "unrecognized arguments: --prot 1"),
        (("serve", "--port", "eighty"), "argument --port: invalid int value: 'eighty'"),
        (("users", "disable"), "the following arguments are required: --email"),
        (("users", "set-role", "--email", "a@example.com"), "the following arguments are required: --role"),
        (
            ("users", "set-role", "--email", "a@example.com", "--role", "root"),
            "argument --role: invalid choice: 'root'",
        ),
        (("users", "create", "--email"), "argument --email: expected one argument"),
        (("users", "list", "--json", "yes"), "unrecognized arguments: yes"),
    ],
)
def test_usage_errors_exit_2_and_change_nothing(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    result = tillbox(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("usage: tillbox")
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "tillbox-data").exists()


@pytest.mark.parametrize(("args", "usage"), [((), "usage: tillbox [-h]"), (("users",), "usage: tillbox users [-h]")])
def test_a_missing_command_shows_the_choices_and_exits_2(tmp_path: Path, args: tuple[str, ...], usage: str) -> None:
    result = tillbox(*args, cwd=tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith(usage)
    assert "commands:" in result.stderr


def test_help_states_the_exit_codes(tmp_path: Path) -> None:
    shown = tillbox("--help", cwd=tmp_path).stdout
    assert "exit status:\n  0  done\n  1  an error" in shown
    assert "  2  a usage error: an unknown command or option, a missing or malformed value" in shown


def _read_first_line_then_close(args: list[str], cwd: Path) -> tuple[bytes, bytes, int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "entrypoints.cli", *args],
        cwd=cwd,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        first = process.stdout.readline()
        process.stdout.close()  # what `| head -n 1` does once it has its line
        errors = process.stderr.read()
        return first, errors, process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path: Path) -> None:
    # More output than a pipe holds (64 KiB on Linux), so that the command is still
    # writing when the pipe closes, on every run: 4,000 allowed origins.
    origins = ", ".join(f'"https://shop-{n:05d}.example.com"' for n in range(4000))
    (tmp_path / "config.toml").write_text(f"[server]\ncors_origins = [{origins}]\n")
    assert len(tillbox("config", "show", cwd=tmp_path).stdout) > 2 * 65536

    first, errors, status = _read_first_line_then_close(["config", "show"], tmp_path)

    assert first == b"# config file: config.toml\n"
    assert errors == b""  # no traceback, not even "Exception ignored"
    assert status == 1


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
        (
            '[server]\ntrusted_proxies = ["127.0.0.1", "10.0.0.1/8"]\n',
            {},
            "server.trusted_proxies: '10.0.0.1/8' has host bits set; did you mean 10.0.0.0/8?",
        ),
        (
            "",
            {"TILLBOX_SERVER_TRUSTED_PROXIES": "::1, proxy.internal"},
            "server.trusted_proxies: 'proxy.internal' is not an IP address or a network such as 10.0.0.0/8",
        ),
        (
            "",
            {"TILLBOX_SERVER_PROXY_HEADER": "x-real-ip"},
            "server.proxy_header must be one of forwarded, x-forwarded-for, not 'x-real-ip'",
        ),
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
    assert result.stderr == "tillbox: error: password must have at least 12 characters. (validation_failed)\n"
    result = tillbox(
        "users", "create", "--email", "not-an-email", "--password-stdin", cwd=tmp_path, stdin=PASSWORD + "\n"
    )
    assert result.returncode == 1
    assert result.stderr == "tillbox: error: email is not a valid email address. (validation_failed)\n"


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

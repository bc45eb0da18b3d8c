"""Operator commands against real processes: workers, backup and restore while serving,
reset, key rotation, users, openapi, config show, and their refusals."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import assert_error, serve
from tests.e2e.test_cli import PASSWORD, _get, _post, create_user, tillbox
from tests.harness import Server, environment, until

NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture
def admin_dir(tmp_path: Path) -> Path:
    create_user(tmp_path)
    return tmp_path


@pytest.fixture
def server(admin_dir: Path) -> Iterator[Server]:
    with Server(admin_dir) as running:
        yield running


def _token(server: Server) -> str:
    _, tokens = _post(server.base + "/api/v1/auth/login", {"email": "admin@example.com", "password": PASSWORD})
    return str(tokens["access_token"])


def _listening(server: Server) -> list[str]:
    """The URL in each "listening" line of the server's log so far: one per worker."""
    return [entry["url"] for entry in server.log() if entry.get("message") == "listening"]


def _count(database: Path, table: str = "products") -> int:
    with sqlite3.connect(database) as db:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def test_workers_share_the_port_and_stop_cleanly(admin_dir: Path) -> None:
    with Server(admin_dir, "--workers", "2") as server:
        # Both workers listen on the one port the supervisor was given by the kernel.
        until(lambda: len(_listening(server)) == 2, timeout=30, what="both workers listening")
        assert _listening(server) == [server.base] * 2
        token = _token(server)
        for n in range(20):
            status, _ = _post(
                server.base + "/api/v1/products", {"sku": f"W-{n}", "name": "Worker test", "price": 100}, token
            )
            assert status == 201
        _, page = _get(server.base + "/api/v1/products?limit=100", token)
        assert len(page["data"]) == 20  # type: ignore[arg-type]
        assert server.stop() == 0
    assert _count(admin_dir / "tillbox-data" / "tillbox.db") == 20


def test_a_second_server_on_the_same_data_directory(server: Server, admin_dir: Path) -> None:
    with Server(admin_dir) as second:
        token = _token(server)
        status, _ = _post(
            server.base + "/api/v1/products", {"sku": "TWO-1", "name": "Seen by both", "price": 100}, token
        )
        assert status == 201
        _, page = _get(second.base + "/api/v1/products?q=TWO", _token(second))
        assert [p["sku"] for p in page["data"]] == ["TWO-1"]  # type: ignore[index]
        assert second.stop() == 0


def test_backup_while_writing_then_restore_elsewhere(
    server: Server, admin_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    token = _token(server)
    stop = threading.Event()
    written: list[int] = []

    def write() -> None:
        n = 0
        while not stop.is_set():
            status, _ = _post(
                server.base + "/api/v1/products", {"sku": f"BK-{n}", "name": "During backup", "price": 1}, token
            )
            assert status == 201
            n += 1
            written.append(n)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        until(lambda: len(written) >= 10 or not writer.is_alive(), timeout=30, what="writes before the backup")
        before = len(written)
        backup_file = admin_dir / "backup.db"
        result = tillbox("backup", str(backup_file), cwd=admin_dir)
        assert result.returncode == 0, result.stderr
        after = len(written)
        until(lambda: len(written) >= after + 10 or not writer.is_alive(), timeout=30, what="writes after it")
        assert writer.is_alive()  # it stops only when told to, or when a write failed
    finally:
        stop.set()
        writer.join()
    backed_up = _count(backup_file)
    assert before <= backed_up <= len(written)
    assert tillbox("backup", str(backup_file), cwd=admin_dir).returncode == 1  # exists: not overwritten

    # Restoring is refused while the server runs, and changes nothing.
    result = tillbox("restore", str(backup_file), "--yes", cwd=admin_dir)
    assert result.returncode == 1
    assert "a Tillbox server is running" in result.stderr
    assert _count(admin_dir / "tillbox-data" / "tillbox.db") == len(written)

    elsewhere = tmp_path_factory.mktemp("elsewhere")
    result = tillbox("restore", str(backup_file), cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    restored = elsewhere / "tillbox-data" / "tillbox.db"
    assert _count(restored) == backed_up
    with sqlite3.connect(restored) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    with Server(elsewhere) as other:
        _, page = _get(other.base + "/api/v1/products?q=BK-0", _token(other))  # the admin came along
        assert "BK-0" in [p["sku"] for p in page["data"]]  # type: ignore[index]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"this is not a database at all, just text" * 100, "is not a SQLite database"),
        (b"", "is a SQLite database but not a Tillbox one"),
        ("foreign", "is a SQLite database but not a Tillbox one"),
        ("newer", "newer than this Tillbox"),
        ("damaged", "damaged"),
    ],
)
def test_restore_refuses_bad_files_and_changes_nothing(admin_dir: Path, content: bytes | str, message: str) -> None:
    bad = admin_dir / "bad.db"
    database = admin_dir / "tillbox-data" / "tillbox.db"
    if content == "foreign":
        with sqlite3.connect(bad) as db:
            db.execute("CREATE TABLE things (x)")
    elif content == "newer":
        assert tillbox("backup", str(bad), cwd=admin_dir).returncode == 0
        with sqlite3.connect(bad) as db:
            db.execute("INSERT INTO _migrations VALUES (999, 'from the future', '2030-01-01T00:00:00.000000Z')")
    elif content == "damaged":
        assert tillbox("backup", str(bad), cwd=admin_dir).returncode == 0
        raw = bytearray(bad.read_bytes())
        raw[8192:-4096] = bytes((n * 37) % 251 for n in range(len(raw) - 8192 - 4096))  # trample the b-trees
        bad.write_bytes(bytes(raw))
    else:
        assert isinstance(content, bytes)
        bad.write_bytes(content)
    before = database.read_bytes()
    result = tillbox("restore", str(bad), "--yes", cwd=admin_dir)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0] or (message == "damaged" and "malformed" in lines[0]), lines[0]
    assert database.read_bytes() == before


def test_reset_asks_and_refuses_while_serving(server: Server, admin_dir: Path) -> None:
    result = tillbox("db", "reset", "--yes", cwd=admin_dir)
    assert result.returncode == 1
    assert "a Tillbox server is running" in result.stderr
    assert server.stop() == 0
    result = tillbox("db", "reset", cwd=admin_dir)  # no terminal and no --yes
    assert result.returncode == 1
    assert "pass --yes" in result.stderr
    assert _count(admin_dir / "tillbox-data" / "tillbox.db", "users") == 1
    result = tillbox("db", "reset", "--yes", cwd=admin_dir)
    assert result.returncode == 0, result.stderr
    assert _count(admin_dir / "tillbox-data" / "tillbox.db", "users") == 0


def test_keys_rotate_keeps_old_tokens_working(server: Server, admin_dir: Path) -> None:
    old = _token(server)
    result = tillbox("keys", "rotate", cwd=admin_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("new signing key ")
    kid = result.stdout.split()[3].rstrip(";")

    def signed_with_the_new_key() -> str | None:
        token = _token(server)
        return token if _kid(token) == kid else None

    # The running server notices the rotation by itself (within seconds): its tokens change key.
    new = until(signed_with_the_new_key, timeout=30, every=0.2, what="a token signed with the new key")
    assert _kid(old) != kid
    assert _get(server.base + "/api/v1/users/me", old)[0] == 200
    assert _get(server.base + "/api/v1/users/me", new)[0] == 200
    with sqlite3.connect(admin_dir / "tillbox-data" / "tillbox.db") as db:
        assert db.execute("SELECT object_id FROM audit_log WHERE action = 'keys.rotated'").fetchall() == [(kid,)]


def _kid(token: str) -> str:
    return str(json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["kid"])


def test_users_list_and_disable(admin_dir: Path) -> None:
    create_user(admin_dir, "staff@example.com", "staff")
    listing = tillbox("users", "list", cwd=admin_dir)
    assert listing.returncode == 0
    rows = listing.stdout.strip().splitlines()[1:]
    assert [row.split()[1:4] for row in rows] == [
        ["admin@example.com", "admin", "active"],
        ["staff@example.com", "staff", "active"],
    ]
    assert len(tillbox("users", "list", "--role", "staff", cwd=admin_dir).stdout.strip().splitlines()) == 2
    disabled = tillbox("users", "disable", "--email", "STAFF@example.com", cwd=admin_dir)
    assert disabled.returncode == 0, disabled.stderr
    rows = tillbox("users", "list", cwd=admin_dir).stdout.strip().splitlines()[1:]
    assert [row.split()[3] for row in rows] == ["active", "disabled"]
    again = tillbox("users", "disable", "--email", "staff@example.com", cwd=admin_dir)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("staff@example.com (usr_") and again.stdout.endswith(") was already disabled\n")

    enabled = tillbox("users", "enable", "--email", "Staff@Example.com", cwd=admin_dir)
    assert enabled.returncode == 0, enabled.stderr
    assert enabled.stdout.startswith("enabled staff@example.com (usr_")
    rows = tillbox("users", "list", cwd=admin_dir).stdout.strip().splitlines()[1:]
    assert [row.split()[3] for row in rows] == ["active", "active"]
    again = tillbox("users", "enable", "--email", "staff@example.com", cwd=admin_dir)
    assert again.stdout.endswith(") was already active\n")
    assert _audit(admin_dir, "user.status_changed") == [
        (None, "cli", {"before": "active", "after": "disabled"}),
        (None, "cli", {"before": "disabled", "after": "active"}),
    ]


def _audit(directory: Path, action: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(directory / "tillbox-data" / "tillbox.db") as db:
        rows = db.execute(
            "SELECT actor_id, source_ip, details FROM audit_log WHERE action = ? ORDER BY id", (action,)
        ).fetchall()
    return [(actor, source, json.loads(details)) for actor, source, details in rows]


def _accounts(directory: Path) -> list[tuple[object, ...]]:
    """Everything a users command could change: accounts, sessions, the audit log."""
    with sqlite3.connect(directory / "tillbox-data" / "tillbox.db") as db:
        return [
            *db.execute("SELECT * FROM users ORDER BY id"),
            *db.execute("SELECT * FROM refresh_tokens ORDER BY id"),
            *db.execute("SELECT * FROM audit_log ORDER BY id"),
        ]


def _create(directory: Path, email: str, role: str = "customer", password: str = PASSWORD) -> str:
    result = tillbox(
        "users", "create", "--email", email, "--role", role, "--password-stdin", cwd=directory, stdin=password + "\n"
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.rsplit("(", 1)[1].rstrip(")\n")


@pytest.mark.parametrize(
    "command",
    [
        ("disable",),
        ("enable",),
        ("set-role", "--role", "staff"),
        ("reset-password", "--password-stdin"),
    ],
    ids=lambda c: c[0],
)
def test_users_commands_name_an_unknown_email_and_change_nothing(admin_dir: Path, command: tuple[str, ...]) -> None:
    before = _accounts(admin_dir)

    result = tillbox(
        "users", command[0], "--email", " Nobody@Example.com", *command[1:], cwd=admin_dir, stdin=NEW_PASSWORD + "\n"
    )

    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "tillbox: error: No user with email 'nobody@example.com'. (user_not_found)\n"
    assert _accounts(admin_dir) == before


@pytest.mark.parametrize(
    "command", [("disable",), ("enable",), ("set-role", "--role", "staff"), ("reset-password", "--password-stdin")]
)
def test_users_commands_refuse_a_malformed_email(admin_dir: Path, command: tuple[str, ...]) -> None:
    before = _accounts(admin_dir)

    result = tillbox("users", command[0], "--email", "admin", *command[1:], cwd=admin_dir, stdin=NEW_PASSWORD + "\n")

    assert result.returncode == 1
    assert result.stderr == "tillbox: error: email is not a valid email address. (validation_failed)\n"
    assert _accounts(admin_dir) == before


def test_users_set_role(admin_dir: Path) -> None:
    kate = _create(admin_dir, "kate@example.com")

    result = tillbox("users", "set-role", "--email", "KATE@example.com", "--role", "staff", cwd=admin_dir)

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"kate@example.com ({kate}) is now staff (was customer)\n"
    listed = json.loads(tillbox("users", "list", "--json", "--role", "staff", cwd=admin_dir).stdout)
    assert [(u["id"], u["role"]) for u in listed] == [(kate, "staff")]
    assert _audit(admin_dir, "user.role_changed") == [(None, "cli", {"before": "customer", "after": "staff"})]

    before = _accounts(admin_dir)
    again = tillbox("users", "set-role", "--email", "kate@example.com", "--role", "staff", cwd=admin_dir)
    assert again.stdout == f"kate@example.com ({kate}) was already staff\n"
    bad = tillbox("users", "set-role", "--email", "kate@example.com", "--role", "owner", cwd=admin_dir)
    assert bad.returncode == 2
    assert "argument --role: invalid choice: 'owner' (choose from 'customer', 'staff', 'admin')" in bad.stderr
    assert _accounts(admin_dir) == before


async def test_users_list_json_is_what_the_api_returns(admin_dir: Path) -> None:
    _create(admin_dir, "kate@example.com")
    _create(admin_dir, "sam@example.com", "staff")
    assert tillbox("users", "disable", "--email", "sam@example.com", cwd=admin_dir).returncode == 0

    result = tillbox("users", "list", "--json", cwd=admin_dir)
    staff_only = tillbox("users", "list", "--json", "--role", "staff", cwd=admin_dir)
    empty = tillbox("users", "list", "--json", cwd=admin_dir, env={"TILLBOX_DATA_DIR": str(admin_dir / "empty")})

    assert (result.returncode, result.stderr) == (0, "")
    listed = json.loads(result.stdout)
    async with serve(admin_dir / "tillbox-data") as api:
        token = (await api.login("admin@example.com", PASSWORD))["access_token"]
        status, page, _ = await api.call("GET", "/api/v1/users?limit=100", token=token)
    assert status == 200
    assert listed == page["data"]
    assert [(u["email"], u["role"], u["status"]) for u in listed] == [
        ("admin@example.com", "admin", "active"),
        ("kate@example.com", "customer", "active"),
        ("sam@example.com", "staff", "disabled"),
    ]
    assert json.loads(staff_only.stdout) == [listed[2]]
    assert (empty.returncode, empty.stdout) == (0, "[]\n")


async def test_users_reset_password_ends_every_session(admin_dir: Path) -> None:
    kate = _create(admin_dir, "kate@example.com")
    async with serve(admin_dir / "tillbox-data") as api:
        sessions = [await api.login("kate@example.com", PASSWORD) for _ in range(2)]

        result = tillbox(
            "users",
            "reset-password",
            "--email",
            "Kate@Example.com",
            "--password-stdin",
            cwd=admin_dir,
            stdin=NEW_PASSWORD + "\n",
        )

        assert result.returncode == 0, result.stderr
        assert result.stdout == f"reset the password of kate@example.com ({kate}); their sessions are ended\n"
        for session in sessions:
            status, body, _ = await api.call(
                "POST", "/api/v1/auth/refresh", json={"refresh_token": session["refresh_token"]}
            )
            assert_error(status, body, 401, "invalid_token")
        status, body, _ = await api.call(
            "POST", "/api/v1/auth/login", json={"email": "kate@example.com", "password": PASSWORD}
        )
        assert_error(status, body, 401, "invalid_credentials")
        assert (await api.login("kate@example.com", NEW_PASSWORD))["access_token"]
    with sqlite3.connect(admin_dir / "tillbox-data" / "tillbox.db") as db:
        rows = db.execute(
            "SELECT actor_id, object_id, source_ip, details FROM audit_log WHERE action = 'user.password_reset'"
        ).fetchall()
        assert rows == [(None, kate, "cli", "{}")]
        sessions_left = db.execute(
            "SELECT revoked_at IS NULL, count(*) FROM refresh_tokens WHERE user_id = ? GROUP BY 1 ORDER BY 1", (kate,)
        ).fetchall()
        assert sessions_left == [(0, 2), (1, 1)]  # the two from before are revoked; the login after is not


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        ("", "no password on standard input"),
        ("\n", "no password on standard input"),
        ("short\n", "password must have at least 12 characters. (validation_failed)"),
        ("password1234\n", "password is too common or too easy to guess; choose another. (validation_failed)"),
        ("kate@example.com\n", "password must not be the account's email address. (validation_failed)"),
    ],
    ids=["nothing", "empty line", "short", "common", "the email"],
)
def test_users_reset_password_refuses_a_bad_password_and_changes_nothing(
    admin_dir: Path, stdin: str, message: str
) -> None:
    _create(admin_dir, "kate@example.com")
    before = _accounts(admin_dir)

    result = tillbox(
        "users", "reset-password", "--email", "kate@example.com", "--password-stdin", cwd=admin_dir, stdin=stdin
    )

    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"tillbox: error: {message}\n"
    assert _accounts(admin_dir) == before


def test_users_reset_password_without_a_terminal_asks_for_password_stdin(admin_dir: Path) -> None:
    _create(admin_dir, "kate@example.com")
    before = _accounts(admin_dir)

    result = tillbox("users", "reset-password", "--email", "kate@example.com", cwd=admin_dir, stdin=NEW_PASSWORD + "\n")

    assert result.returncode == 1
    assert result.stderr == "tillbox: error: no terminal to ask for the password; use --password-stdin\n"
    assert _accounts(admin_dir) == before


def _as_after_a_login() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _on_a_terminal(args: list[str], cwd: Path, answers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    """Run tillbox with a pseudo-terminal as its controlling terminal; answer each prompt
    when it appears. Returns the exit status and everything the terminal showed."""
    master, slave = os.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "entrypoints.cli", *args],
        cwd=cwd,
        env=environment(),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        # A session of its own whose controlling terminal is the pty, as after a login:
        # getpass reads /dev/tty, not standard input. Ctrl-C as a terminal delivers it: a
        # test run started in the background (`make test &`) ignores SIGINT, and a child
        # would inherit that, so the child gets the default back.
        start_new_session=True,
        preexec_fn=_as_after_a_login,
    )
    os.close(slave)
    shown = b""

    def read_until(done: Callable[[bytes], bool]) -> None:
        nonlocal shown
        deadline = time.monotonic() + 60
        while not done(shown):
            assert time.monotonic() < deadline, shown
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the terminal's other side is closed
                    chunk = b""
                if not chunk:
                    return
                shown += chunk

    try:
        for prompt, answer in answers:
            seen = shown.count(prompt)
            read_until(lambda text, seen=seen, prompt=prompt: text.count(prompt) > seen)
            os.write(master, answer + b"\n")
        read_until(lambda text: False)  # to the end
        return process.wait(timeout=60), shown.replace(b"\r\n", b"\n")
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
            process.wait()


def test_users_reset_password_asks_twice_on_a_terminal(admin_dir: Path) -> None:
    kate = _create(admin_dir, "kate@example.com")
    before = _accounts(admin_dir)
    command = ["users", "reset-password", "--email", "kate@example.com"]

    status, shown = _on_a_terminal(
        command, admin_dir, [(b"New password: ", NEW_PASSWORD.encode()), (b"Repeat it: ", b"something else entirely")]
    )

    assert status == 1
    assert shown.endswith(b"Repeat it: \ntillbox: error: the passwords differ\n"), shown
    assert NEW_PASSWORD.encode() not in shown  # not echoed
    assert _accounts(admin_dir) == before

    status, shown = _on_a_terminal(
        command, admin_dir, [(b"New password: ", NEW_PASSWORD.encode()), (b"Repeat it: ", NEW_PASSWORD.encode())]
    )

    assert status == 0, shown
    assert shown.endswith(f"reset the password of kate@example.com ({kate}); their sessions are ended\n".encode())
    assert NEW_PASSWORD.encode() not in shown
    assert _audit(admin_dir, "user.password_reset") == [(None, "cli", {})]


def test_ctrl_c_at_the_password_prompt_interrupts_at_once(admin_dir: Path) -> None:
    _create(admin_dir, "kate@example.com")
    before = _accounts(admin_dir)

    status, shown = _on_a_terminal(
        ["users", "reset-password", "--email", "kate@example.com"], admin_dir, [(b"New password: ", b"\x03")]
    )

    assert status == 1
    assert shown.endswith(b"tillbox: error: interrupted\n"), shown
    assert b"Traceback" not in shown
    assert _accounts(admin_dir) == before


def test_openapi_prints_the_served_document(server: Server, admin_dir: Path) -> None:
    result = tillbox("openapi", cwd=admin_dir)
    assert result.returncode == 0
    _, served = _get(server.base + "/api/v1/openapi.json")
    assert json.loads(result.stdout) == served


def test_config_show_says_where_each_value_came_from(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[server]\nport = 9001\n[database]\nurl = "postgresql://u:secret@db/tillbox"\n')
    result = tillbox("config", "show", "--config", str(config), cwd=tmp_path, env={"TILLBOX_SERVER_HOST": "0.0.0.0"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"port = 9001  # config file {config}" in lines
    assert 'host = "0.0.0.0"  # environment TILLBOX_SERVER_HOST' in lines
    assert "workers = 1  # default" in lines
    assert f'url = "********"  # config file {config}' in lines
    assert "u:secret@" not in result.stdout
    assert not (tmp_path / "tillbox-data").exists()


def test_a_data_directory_path_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("not a directory")
    result = tillbox("db", "migrate", cwd=tmp_path, env={"TILLBOX_DATA_DIR": str(tmp_path / "data")})
    assert result.returncode == 1
    assert result.stderr.startswith("tillbox: error: cannot create data directory")
    assert (tmp_path / "data").read_text() == "not a directory"


def _unwritable(directory: Path) -> None:
    """Make a directory that even root cannot write to: CI runs as root, which ignores modes."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(directory)], check=True)
    else:
        directory.chmod(0o500)


def _writable(directory: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(directory)], check=True)
    directory.chmod(0o700)


@pytest.mark.parametrize("command", [("db", "migrate"), ("serve", "--port", "0"), ("users", "list")])
def test_a_data_directory_that_is_not_writable(tmp_path: Path, command: tuple[str, ...]) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    _unwritable(data)
    try:
        result = tillbox(*command, cwd=tmp_path, env={"TILLBOX_DATA_DIR": str(data)})
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert lines == [f"tillbox: error: data directory {data} is not writable: {lines[0].rsplit(': ', 1)[1]}"]
        assert list(data.iterdir()) == []
    finally:
        _writable(data)


def test_workers_stop_cleanly_when_the_whole_process_group_is_signalled(admin_dir: Path) -> None:
    # What systemd (KillMode=control-group) and a terminal's Ctrl-C do: every worker gets the
    # signal directly and again from the supervisor; the second must not abort the first.
    with Server(admin_dir, "--workers", "2") as server:
        until(lambda: len(_listening(server)) == 2, timeout=30, what="both workers listening")
        os.killpg(server.process.pid, signal.SIGTERM)  # the harness gives it a process group of its own
        assert server.wait() == 0
        assert "GracefulExit" not in server.stderr
    assert not (admin_dir / "tillbox-data" / "tillbox.db-wal").exists()  # the database was closed

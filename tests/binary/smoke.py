"""Smoke test of the built executable, run as an operator would run it (``make smoke``).

    python3 tests/binary/smoke.py [dist/tillbox]

Standard library only, meant for the system ``python3``: it tests the binary, not the
virtual environment. Everything runs in an empty temporary directory with
``PATH=/usr/bin:/bin`` and no inherited ``TILLBOX_`` variable: the command line, an
admin account, a demo catalog, then ``serve`` with the catalog and account checks over
HTTP, SIGTERM, and ``serve --workers 2`` on the same data; the database must pass
``PRAGMA integrity_check``. Each check prints one line; the first failure prints what
went wrong and the server's output, and exits 1.
(The name does not match ``test_*.py``: pytest's default run does not collect it.)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, NoReturn

ROOT = Path(__file__).resolve().parent.parent.parent
ADMIN = "admin@example.com"
CUSTOMER = "customer@example.com"
PASSWORD = "smoke test passphrase 7391"
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0

# Native modules the server must have loaded from the bundle. Several of them have a
# silent pure-Python or asyncio fallback, so only the process's memory map can tell.
NATIVE_MODULES = {
    "uvloop": "uvloop/loop.",
    "aiohttp's HTTP parser": "aiohttp/_http_parser.",
    "multidict": "multidict/_multidict.",
    "yarl": "yarl/_quoting_c.",
    "orjson": "orjson/orjson.",
    "argon2 (cffi)": "_argon2_cffi_bindings/_ffi.",
    "cryptography": "cryptography/hazmat/bindings/_rust.",
    "dependency_injector": "dependency_injector/providers.",
    "sqlite3": "_sqlite3.",
}


class Smoke:
    def __init__(self, binary: Path, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.unpack_dir = workdir / "tmp"  # where the one-file binary unpacks itself
        self.unpack_dir.mkdir()
        self.env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(workdir),
            "LANG": "C.UTF-8",
            "TMPDIR": str(self.unpack_dir),
        }
        self.server: subprocess.Popen[bytes] | None = None
        self.port = 0

    # Reporting.
    def ok(self, name: str, detail: str = "") -> None:
        print(f"ok    {name}" + (f": {detail}" if detail else ""), flush=True)

    def fail(self, name: str, problem: str) -> NoReturn:
        print(f"FAIL  {name}: {problem}", flush=True)
        if self.server is not None:
            if self.server.poll() is None:
                self.server.kill()
                self.server.wait()
            for stream in ("stderr", "stdout"):
                text = (self.workdir / f"server.{stream}").read_text(errors="replace")
                lines = text.splitlines()[-60:]
                print(f"----- server {stream} (last {len(lines)} lines) -----", file=sys.stderr)
                print("\n".join(lines), file=sys.stderr)
        raise SystemExit(1)

    # Running the binary.
    def run(self, name: str, *args: str, stdin: str = "", cwd: Path | None = None) -> str:
        try:
            done = subprocess.run(
                [str(self.binary), *args],
                input=stdin,
                capture_output=True,
                text=True,
                cwd=cwd or self.workdir,
                env=self.env,
                timeout=60,
            )
        except subprocess.TimeoutExpired:
            self.fail(name, f"`tillbox {' '.join(args)}` still running after 60 s")
        if done.returncode != 0:
            self.fail(name, f"`tillbox {' '.join(args)}` exited {done.returncode}: {done.stderr.strip()}")
        return done.stdout

    def http(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            request.add_header("Content-Type", "application/json")
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, data, timeout=10) as response:
                status, raw, kind = response.status, response.read(), response.headers.get_content_type()
        except urllib.error.HTTPError as e:
            status, raw, kind = e.code, e.read(), e.headers.get_content_type()
        return status, (json.loads(raw) if raw and kind == "application/json" else raw.decode(errors="replace"))

    def expect(self, name: str, method: str, path: str, status: int, body: Any = None, token: str | None = None) -> Any:
        got, answer = self.http(method, path, body, token)
        if got != status:
            self.fail(name, f"{method} {path} answered {got}, expected {status}: {answer}")
        return answer

    # The checks, in order.
    def command_line(self) -> None:
        help_text = self.run("--help", "--help")
        missing = [c for c in ("serve", "db", "users", "version") if c not in help_text]
        if missing:
            self.fail("--help", f"commands missing from the help: {missing}")
        self.ok("tillbox --help", "lists serve, db, users, version")

        version = self.run("version", "version").strip()
        if not re.fullmatch(r"tillbox \d+\.\d+\.\d+\S* \(commit [0-9a-f]{7,40}(-dirty)?\)", version):
            self.fail("version", f"expected 'tillbox <version> (commit <sha>)', got {version!r}")
        self.ok("tillbox version", version)

    def create_admin(self) -> None:
        args = ("users", "create", "--email", ADMIN, "--role", "admin", "--password-stdin")
        out = self.run("users create", *args, stdin=PASSWORD + "\n").strip()
        if not out.startswith(f"created admin {ADMIN}"):
            self.fail("users create", f"unexpected output {out!r}")
        self.ok("tillbox users create --role admin", out)

    def seed(self) -> None:
        # Its own directory: the catalog checks below expect only the product they create.
        seed_dir = self.workdir / "seed"
        seed_dir.mkdir()
        out = self.run("db seed", "db", "seed", "--count", "25", cwd=seed_dir).strip()
        if out != "seeded 25 products (0 already there)":
            self.fail("db seed", f"unexpected output {out!r}")
        self.ok("tillbox db seed --count 25 (rich progress bar)", out)

    def start_server(self, *extra: str) -> None:
        name = " ".join(("tillbox serve", *extra))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        with (self.workdir / "server.stdout").open("wb") as out, (self.workdir / "server.stderr").open("wb") as err:
            self.server = subprocess.Popen(
                [str(self.binary), "serve", "--port", str(self.port), *extra],
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
        started = time.monotonic()
        while time.monotonic() - started < READY_TIMEOUT:
            if self.server.poll() is not None:
                self.fail(name, f"the server exited with {self.server.returncode} before it was ready")
            try:
                status, _ = self.http("GET", "/readyz")
            except OSError:
                status = 0
            if status == 200:
                self.ok(f"{name}: /readyz 200", f"port {self.port}, after {time.monotonic() - started:.2f} s")
                return
            time.sleep(0.05)
        self.fail(name, f"/readyz did not answer 200 within {READY_TIMEOUT:.0f} s")

    def docs(self) -> None:
        page = self.expect("/docs", "GET", "/docs", 200)
        if not isinstance(page, str) or "<html" not in page.lower():
            self.fail("/docs", "not an HTML page")
        document = self.expect("openapi", "GET", "/api/v1/openapi.json", 200)
        if not str(document.get("openapi", "")).startswith("3.1"):
            self.fail("openapi", f"openapi version {document.get('openapi')!r}")
        self.ok("GET /docs and /api/v1/openapi.json", f"{len(document['paths'])} paths, {len(page)} bytes of HTML")

    def catalog(self) -> None:
        credentials = {"email": ADMIN, "password": PASSWORD}
        admin = self.expect("admin login", "POST", "/api/v1/auth/login", 200, credentials)["access_token"]
        self.ok("admin logs in")

        new = {"sku": "SMOKE-1", "name": "Smoke test mug", "price": 1299, "stock": 5}
        product = self.expect("create product", "POST", "/api/v1/products", 201, new, admin)
        if {k: product.get(k) for k in new} != new or product.get("currency") != "USD":
            self.fail("create product", f"unexpected product {product}")
        self.ok("admin creates a product", product["id"])

        listed = self.expect("list products", "GET", "/api/v1/products", 200)
        if [p["id"] for p in listed["data"]] != [product["id"]]:
            self.fail("list products", f"expected only {product['id']}, got {listed}")
        self.ok("GET /api/v1/products lists it")

    def customer(self) -> None:
        credentials = {"email": CUSTOMER, "password": PASSWORD}
        user = self.expect("register", "POST", "/api/v1/auth/register", 201, credentials)
        if (user.get("email"), user.get("role")) != (CUSTOMER, "customer"):
            self.fail("register", f"unexpected user {user}")
        self.ok("a customer registers", user["id"])

        token = self.expect("customer login", "POST", "/api/v1/auth/login", 200, credentials)["access_token"]
        me = self.expect("users/me", "GET", "/api/v1/users/me", 200, token=token)
        if (me.get("id"), me.get("email"), me.get("role")) != (user["id"], CUSTOMER, "customer"):
            self.fail("users/me", f"unexpected account {me}")
        self.ok("the customer logs in; GET /api/v1/users/me is theirs")

    def native_modules(self) -> None:
        """The Python process (the bootloader's child) has the compiled modules loaded."""
        assert self.server is not None
        children = descendants(self.server.pid)
        if len(children) != 1:
            self.fail("processes", f"expected the bootloader to run one Python child, found {children}")
        maps = Path(f"/proc/{children[0]}/maps").read_text()
        missing = [name for name, part in NATIVE_MODULES.items() if part not in maps]
        if missing:
            self.fail("native modules", f"not loaded from the bundle: {', '.join(missing)}")
        self.ok("native modules loaded", ", ".join(NATIVE_MODULES))

    def workers(self) -> None:
        """``--workers 2`` forks two workers from the Python process; the data survived the restart."""
        assert self.server is not None
        tree = descendants(self.server.pid)
        if len(tree) != 3:
            self.fail("--workers 2", f"expected bootloader -> Python -> 2 workers, found descendants {tree}")
        listed = self.expect("list after restart", "GET", "/api/v1/products", 200)
        if [p["sku"] for p in listed["data"]] != ["SMOKE-1"]:
            self.fail("list after restart", f"expected SMOKE-1, got {listed}")
        self.ok("--workers 2: three processes under the bootloader; the product is still there")

    def stop_server(self) -> None:
        assert self.server is not None
        tree = descendants(self.server.pid)
        self.server.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        try:
            code = self.server.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.fail("SIGTERM", f"still running {STOP_TIMEOUT:.0f} s after SIGTERM")
        took = time.monotonic() - sent
        if code != 0:
            self.fail("SIGTERM", f"exit code {code}, expected 0")
        left = [pid for pid in tree if Path(f"/proc/{pid}").exists()]
        if left:
            self.fail("SIGTERM", f"processes {left} outlived the bootloader")
        self.ok("SIGTERM: exit 0, no process left", f"after {took:.2f} s")

        output = (self.workdir / "server.stderr").read_text() + (self.workdir / "server.stdout").read_text()
        if "Traceback" in output:
            self.fail("server output", "a traceback was logged")
        self.ok("no traceback in the server's output")
        self.server = None

    def database(self) -> None:
        path = self.workdir / "tillbox-data" / "tillbox.db"
        if not path.exists():
            self.fail("database", f"{path} does not exist")
        with sqlite3.connect(path) as db:
            result = db.execute("PRAGMA integrity_check").fetchall()
            skus = [sku for (sku,) in db.execute("SELECT sku FROM products")]
            emails = sorted(email for (email,) in db.execute("SELECT email FROM users"))
        db.close()
        if result != [("ok",)]:
            self.fail("integrity_check", f"{result}")
        if skus != ["SMOKE-1"] or emails != [ADMIN, CUSTOMER]:
            self.fail("database", f"expected SMOKE-1 and two accounts, found {skus} and {emails}")
        self.ok("PRAGMA integrity_check: ok", "the product and both accounts are on disk")

    def unpacked_cleaned(self) -> None:
        left = [p.name for p in self.unpack_dir.iterdir()]
        if left:
            self.fail("temporary files", f"left in TMPDIR after the runs: {left}")
        self.ok("every run removed its unpacked files from TMPDIR")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from /proc (children first, then theirs)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):  # the process ended while we looked
            continue
    found, level = [], [pid]
    while level:
        level = [child for child, parent in parents.items() if parent in level]
        found += level
    return found


def main() -> int:
    binary = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "dist" / "tillbox").absolute()
    if not os.access(binary, os.X_OK):
        print(f"FAIL  binary: {binary} is not an executable file (run `make binary`)")
        return 1
    print(f"smoke test of {binary} ({binary.stat().st_size / 1e6:.1f} MB)")
    workdir = Path(tempfile.mkdtemp(prefix="tillbox-smoke-"))
    try:
        smoke = Smoke(binary, workdir)
        try:
            smoke.command_line()
            smoke.create_admin()
            smoke.seed()
            smoke.start_server()
            smoke.docs()
            smoke.catalog()
            smoke.customer()
            smoke.native_modules()
            smoke.stop_server()
            smoke.start_server("--workers", "2")
            smoke.workers()
            smoke.stop_server()
            smoke.database()
            smoke.unpacked_cleaned()
        finally:
            if smoke.server is not None and smoke.server.poll() is None:
                smoke.server.kill()
                smoke.server.wait()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("smoke test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

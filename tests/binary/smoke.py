"""Smoke test of the built executable, run as an operator would run it (``make smoke``).

    python3 tests/binary/smoke.py [dist/tillbox]

Standard library only, meant for the system ``python3``: it tests the binary, not the
virtual environment. Everything runs in an empty temporary directory with
``PATH=/usr/bin:/bin`` and no inherited ``TILLBOX_`` variable: the command line, an
admin account, a demo catalog, then ``serve`` with the catalog and account checks over
HTTP, an order paid by card, SIGTERM, and ``serve --workers 2`` on the same data; the
database must pass ``PRAGMA integrity_check``. ``tillbox admin`` is driven in tmux
(tests/binary/tmux.py) as staff would drive it, once with TERM=vt100 and NO_COLOR=1. Each check prints one line; the first
failure prints what went wrong and the server's output, and exits 1.
(The name does not match ``test_*.py``: pytest's default run does not collect it.)

The card payment goes to localstripe, a Stripe emulator started for the length of the test
by tests/localstripe/serve.py (127.0.0.1, a free port, its state in the temporary
directory). localstripe is test infrastructure, not part of the binary: it runs on the
project's virtual environment (``.venv/bin/python``, or ``$SMOKE_LOCALSTRIPE_PYTHON``),
while this script itself stays standard-library only. The binary is pointed at it with
``TILLBOX_STRIPE_SECRET_KEY`` and ``TILLBOX_STRIPE_API_BASE``, as an operator would, so the
payment proves that the bundle carries what stripe-python needs at run time (its lazily
imported modules and its CA bundle, which it loads even for ``http://``).
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
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
sys.path.insert(0, str(ROOT))  # for tests.harness, standard library only like this script

from tests.binary.tmux import Terminal, TerminalError  # noqa: E402
from tests.harness import Server, ServerFailed  # noqa: E402

ADMIN = "admin@example.com"
CUSTOMER = "customer@example.com"
PASSWORD = "smoke test passphrase 7391"
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
LOCALSTRIPE_SERVE = ROOT / "tests" / "localstripe" / "serve.py"
STRIPE_SECRET_KEY = "sk_test_smoke"
REFUND_REASON = "Refunded from the console in the smoke test"
CONSOLE_TIMEOUT = 20.0  # for each thing the console's screen is waited for
ORDER_QUANTITY = 2  # of the product created by the catalog check (stock 5, price 1299)

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
        self.server: Server | None = None
        self.port = 0
        self.localstripe: subprocess.Popen[bytes] | None = None
        self.localstripe_url = ""
        self.order_id = ""
        self.payment_reference = ""

    # Reporting.
    def ok(self, name: str, detail: str = "") -> None:
        print(f"ok    {name}" + (f": {detail}" if detail else ""), flush=True)

    def fail(self, name: str, problem: str) -> NoReturn:
        print(f"FAIL  {name}: {problem}", flush=True)
        if self.server is not None:
            self.kill_server()
            outputs = {
                "stderr": self.server.stderr,
                "stdout": (self.workdir / "server.stdout").read_text(errors="replace"),
            }
            for stream, text in outputs.items():
                lines = text.splitlines()[-60:]
                print(f"----- server {stream} (last {len(lines)} lines) -----", file=sys.stderr)
                print("\n".join(lines), file=sys.stderr)
        if self.localstripe is not None:
            log = self.workdir / "localstripe" / "localstripe.log"
            lines = log.read_text(errors="replace").splitlines()[-30:] if log.exists() else []
            print(f"----- localstripe output (last {len(lines)} lines) -----", file=sys.stderr)
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
        with (self.workdir / "server.stdout").open("wb") as out:
            try:
                self.server = Server(
                    self.workdir,
                    *extra,
                    command=[str(self.binary)],
                    env=self.env,
                    stdout=out,
                    ready_timeout=READY_TIMEOUT,
                )
            except ServerFailed as e:
                self.fail(name, str(e))
        self.port = self.server.port
        self.ok(f"{name}: /readyz 200", f"port {self.port}, after {self.server.ready_seconds:.2f} s")

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

    def console(
        self, name: str, term: str = "tmux-256color", *, typed_ahead: bool = False, refund: bool = False, **env: str
    ) -> None:
        """``tillbox admin`` in tmux at 80x24, driven by keys as staff would: sign in as an
        admin created with ``users create``, see the dashboard, ``q`` to quit (exit 0), the
        console login in the audit log (source console) and its session ended. Its own shop,
        named by --config. ``typed_ahead``: the email, Tab, the password and Enter sent at
        once, as a password manager types them; else each field once the cursor is in it.
        ``refund``: the shop has demo orders (``db seed``), and before quitting the admin
        opens the orders (``o``), filters the fulfilled ones (``/``), opens the first (Enter),
        refunds what is left of it (``x``, the amount as offered, a reason, ``y``), and the
        refund is then in the store, audited from the console."""
        directory = self.workdir / "".join(c if c.isalnum() else "-" for c in name)
        directory.mkdir()
        config = directory / "config.toml"
        config.write_text(f'[data]\ndir = "{directory / "shop"}"\n', encoding="utf-8")
        args = ("users", "create", "--config", str(config), "--email", ADMIN, "--role", "admin", "--password-stdin")
        created = self.run(f"{name}: users create", *args, stdin=PASSWORD + "\n", cwd=directory)
        user_id = created.strip().rsplit("(", 1)[-1].rstrip(")")
        if refund:
            seed = ("db", "seed", "--config", str(config), "--count", "5", "--orders", "12")
            self.run(f"{name}: db seed", *seed, cwd=directory)

        command = [str(self.binary), "admin", "--config", str(config)]
        try:
            with Terminal(directory, command, env={**self.env, **env}, term=term, name="console") as terminal:
                terminal.wait_for_text("sign in", CONSOLE_TIMEOUT)
                shown = time.perf_counter() - terminal.started
                terminal.wait_for_text("Store:", CONSOLE_TIMEOUT)  # open (else it says why not)
                if typed_ahead:
                    terminal.type(ADMIN)
                    terminal.press("Tab")
                    terminal.type(PASSWORD)
                    terminal.press("Enter")
                else:
                    terminal.type(ADMIN)
                    typed = terminal.wait_for_text(ADMIN, CONSOLE_TIMEOUT)
                    email_row = next(n for n, line in enumerate(typed.splitlines()) if ADMIN in line)
                    terminal.press("Enter")
                    terminal.wait_for_cursor(lambda _, row: row > email_row, "the cursor in the password field")
                    terminal.type(PASSWORD)
                    terminal.press("Enter")
                terminal.wait_for_text("Dashboard", CONSOLE_TIMEOUT)
                terminal.wait_for_text("(schema version", CONSOLE_TIMEOUT)  # its health figures: the store is ok
                if refund:
                    terminal.press("o")
                    terminal.wait_for_text("Orders, newest first", CONSOLE_TIMEOUT)
                    terminal.press("/")
                    terminal.type("fulfilled")
                    terminal.press("Enter")
                    terminal.wait_for(
                        lambda screen: "fulfilled" in screen and "pending" not in screen and "expired" not in screen,
                        "only fulfilled orders listed",
                        CONSOLE_TIMEOUT,
                    )
                    terminal.press("Enter")
                    terminal.wait_for_text("Refunds:", CONSOLE_TIMEOUT)  # the order's screen, read
                    terminal.press("x")
                    terminal.wait_for_text("at most", CONSOLE_TIMEOUT)  # the form, the amount offered
                    # Typed ahead, as a script or a paste sends keys: the amount as offered
                    # (Enter: to the reason), the reason, Enter, without waiting in between.
                    terminal.press("Enter")
                    terminal.type(REFUND_REASON)
                    terminal.press("Enter")
                    terminal.wait_for_text("Yes (y)", CONSOLE_TIMEOUT)
                    terminal.press("y")
                    terminal.wait_for_text("The refund is made", CONSOLE_TIMEOUT)
                    terminal.press("q")  # back to the list: q there quits
                    terminal.wait_for_text("Orders, newest first", CONSOLE_TIMEOUT)
                terminal.press("q")
                status = terminal.wait_for_exit(CONSOLE_TIMEOUT)
                after = terminal.screen()
        except TerminalError as e:
            self.fail(name, str(e))
        if status != 0:
            self.fail(name, f"`tillbox admin` exited {status} after q:\n{after}")
        log = (directory / "shop" / "console.log").read_text(errors="replace")
        if "Traceback" in after or "Traceback" in log:
            self.fail(name, f"a traceback on the terminal or in console.log:\n{after}\n{log[-3000:]}")
        with sqlite3.connect(directory / "shop" / "tillbox.db") as db:
            audited = db.execute("SELECT action, source_ip FROM audit_log WHERE object_id = ?", (user_id,)).fetchall()
            sessions = db.execute(
                "SELECT count(*), count(revoked_at) FROM refresh_tokens WHERE user_id = ?", (user_id,)
            ).fetchone()
        db.close()
        if ("auth.login_succeeded", "console") not in audited:
            self.fail(name, f"no console login of {user_id} in the audit log: {audited}")
        if sessions[0] != 1 or sessions[1] != 1:
            self.fail(name, f"expected the console's one session, ended at q; sessions, ended: {sessions}")
        if refund:
            with sqlite3.connect(directory / "shop" / "tillbox.db") as db:
                refunds = db.execute(
                    "SELECT order_id, status FROM refunds WHERE reason = ?", (REFUND_REASON,)
                ).fetchall()
                audited = db.execute(
                    "SELECT actor_id, source_ip FROM audit_log WHERE action = 'refund.created' AND object_id = ?",
                    (refunds[0][0] if refunds else "",),
                ).fetchall()
            db.close()
            if len(refunds) != 1 or refunds[0][1] != "succeeded":
                with sqlite3.connect(directory / "shop" / "tillbox.db") as db:
                    recent = db.execute("SELECT order_id, status, reason FROM refunds ORDER BY created_at DESC LIMIT 3")
                    latest = recent.fetchall()
                db.close()
                self.fail(name, f"expected one succeeded refund with the console's reason: {refunds}; latest: {latest}")
            if (user_id, "console") not in audited:
                self.fail(name, f"the refund is not audited as {user_id} from the console: {audited}")
        self.ok(
            f"tillbox admin in tmux, {name}",
            f"sign-in screen after {shown:.2f} s, signed in, dashboard, q: exit 0, login audited (source console),"
            " session ended",
        )

    def start_localstripe(self) -> None:
        """The Stripe emulator, from the project's virtual environment, on a free port; the
        binary's next ``serve`` is pointed at it."""
        python = Path(os.environ.get("SMOKE_LOCALSTRIPE_PYTHON") or ROOT / ".venv" / "bin" / "python")
        name = "localstripe"
        if not os.access(python, os.X_OK):
            self.fail(
                name, f"{python} is not executable; run `make smoke` (it creates .venv) or set SMOKE_LOCALSTRIPE_PYTHON"
            )
        directory = self.workdir / "localstripe"
        directory.mkdir()
        state = directory / "state.pickle"  # private: localstripe's default is /tmp/localstripe.pickle
        with (directory / "localstripe.log").open("wb") as log:
            self.localstripe = subprocess.Popen(
                [str(python), str(LOCALSTRIPE_SERVE), "--host", "127.0.0.1", "--port", "0", "--state", str(state)],
                cwd=directory,
                env={"PATH": "/usr/bin:/bin", "HOME": str(self.workdir), "LANG": "C.UTF-8"},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,  # its own process group: stopped whole, by its id
            )
        assert self.localstripe.stdout is not None
        ready, _, _ = select.select([self.localstripe.stdout], [], [], READY_TIMEOUT)
        first = self.localstripe.stdout.readline().strip() if ready else b""
        if not first.isdigit():
            self.fail(name, f"did not print its port within {READY_TIMEOUT:.0f} s (printed {first!r})")
        self.localstripe_url = f"http://127.0.0.1:{int(first)}"
        started = time.monotonic()
        while time.monotonic() - started < READY_TIMEOUT:
            if self.localstripe.poll() is not None:
                self.fail(name, f"exited with {self.localstripe.returncode}")
            try:
                status, _ = self.stripe("GET", "/v1/balance")
            except OSError:
                status = 0
            if status == 200:
                self.ok("localstripe (the Stripe emulator) is up", self.localstripe_url)
                self.env["TILLBOX_STRIPE_SECRET_KEY"] = STRIPE_SECRET_KEY
                self.env["TILLBOX_STRIPE_API_BASE"] = self.localstripe_url
                return
            time.sleep(0.05)
        self.fail(name, f"{self.localstripe_url}/v1/balance did not answer 200 within {READY_TIMEOUT:.0f} s")

    def stripe(self, method: str, path: str) -> tuple[int, Any]:
        """A call to localstripe itself, as Stripe's dashboard would show what it received."""
        request = urllib.request.Request(f"{self.localstripe_url}{path}", method=method)
        request.add_header("Authorization", f"Bearer {STRIPE_SECRET_KEY}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def stop_localstripe(self) -> None:
        if self.localstripe is None:
            return
        if self.localstripe.poll() is None:
            os.killpg(self.localstripe.pid, signal.SIGTERM)
            try:
                self.localstripe.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.localstripe.pid, signal.SIGKILL)
                self.localstripe.wait()
        if self.localstripe.stdout is not None:
            self.localstripe.stdout.close()
        self.localstripe = None

    def card_payment(self) -> None:
        """The customer orders the product and pays by card; Stripe (localstripe) charges it."""
        credentials = {"email": CUSTOMER, "password": PASSWORD}
        token = self.expect("customer login", "POST", "/api/v1/auth/login", 200, credentials)["access_token"]
        admin = self.expect("admin login", "POST", "/api/v1/auth/login", 200, {"email": ADMIN, "password": PASSWORD})
        product = self.expect("list products", "GET", "/api/v1/products", 200)["data"][0]

        lines = {"items": [{"sku": product["sku"], "quantity": ORDER_QUANTITY}]}
        order = self.expect("place order", "POST", "/api/v1/orders", 201, lines, token)
        total = product["price"] * ORDER_QUANTITY
        if (order.get("status"), order.get("total"), order.get("currency")) != ("pending_payment", total, "USD"):
            self.fail("place order", f"expected pending_payment, {total} USD; got {order}")
        self.order_id = order["id"]
        stock = self.expect("product", "GET", f"/api/v1/products/{product['id']}", 200, token=admin["access_token"])
        if stock.get("stock") != product["stock"] - ORDER_QUANTITY:
            self.fail("place order", f"stock {product['stock']} -> {stock.get('stock')}, expected -{ORDER_QUANTITY}")
        self.ok("the customer places an order", f"{order['id']}, {total} USD, stock reserved")

        card = {"method": "card", "payment_method": "pm_card_visa"}
        path = f"/api/v1/orders/{self.order_id}/payments"
        payment = self.expect("card payment", "POST", path, 201, card, token)
        if (payment.get("status"), payment.get("amount"), payment.get("method")) != ("succeeded", total, "card"):
            self.fail("card payment", f"expected a succeeded card payment of {total}; got {payment}")
        self.payment_reference = str(payment.get("provider_reference") or "")
        self.ok("the customer pays by card (pm_card_visa): 201 succeeded", f"{payment['id']}")

        status, intent = self.stripe("GET", f"/v1/payment_intents/{self.payment_reference}")
        if status != 200 or (intent.get("status"), intent.get("amount"), intent.get("currency")) != (
            "succeeded",
            total,
            "usd",
        ):
            self.fail("localstripe", f"PaymentIntent {self.payment_reference!r}: {status} {intent}")
        self.ok("localstripe holds the PaymentIntent, succeeded", f"{self.payment_reference}, {total} usd")

        paid = self.expect("order after payment", "GET", f"/api/v1/orders/{self.order_id}", 200, token=token)
        if (paid.get("status"), paid.get("amount_paid")) != ("paid", paid.get("total")) or paid.get("total") != total:
            self.fail("order after payment", f"expected paid with amount_paid == total == {total}; got {paid}")
        self.ok("GET the order: paid, amount_paid == total", f"{paid['amount_paid']} of {paid['total']}")

    def native_modules(self) -> None:
        """The Python process (the bootloader's child) has the compiled modules loaded."""
        assert self.server is not None
        children = self.server.descendants()
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
        tree = self.server.descendants()
        if len(tree) != 3:
            self.fail("--workers 2", f"expected bootloader -> Python -> 2 workers, found descendants {tree}")
        listed = self.expect("list after restart", "GET", "/api/v1/products", 200)
        if [p["sku"] for p in listed["data"]] != ["SMOKE-1"]:
            self.fail("list after restart", f"expected SMOKE-1, got {listed}")
        credentials = {"email": CUSTOMER, "password": PASSWORD}
        token = self.expect("customer login", "POST", "/api/v1/auth/login", 200, credentials)["access_token"]
        order = self.expect("order after restart", "GET", f"/api/v1/orders/{self.order_id}", 200, token=token)
        if order.get("status") != "paid":
            self.fail("order after restart", f"expected the paid order, got {order}")
        self.ok("--workers 2: three processes under the bootloader; the product and the paid order are still there")

    def kill_server(self) -> None:
        """SIGKILL to the bootloader and every process below it (the harness gives the server
        a process group of its own): a killed bootloader cannot forward the signal, and its
        Python child would go on serving from a deleted directory."""
        if self.server is not None:
            self.server.kill()

    def stop_server(self) -> None:
        assert self.server is not None
        tree = self.server.descendants()
        sent = time.monotonic()
        try:
            code = self.server.stop(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.fail("SIGTERM", f"still running {STOP_TIMEOUT:.0f} s after SIGTERM")
        took = time.monotonic() - sent
        if code != 0:
            self.fail("SIGTERM", f"exit code {code}, expected 0")
        left = [pid for pid in tree if Path(f"/proc/{pid}").exists()]
        if left:
            self.fail("SIGTERM", f"processes {left} outlived the bootloader")
        self.ok("SIGTERM: exit 0, no process left", f"after {took:.2f} s")

        output = self.server.stderr + (self.workdir / "server.stdout").read_text()
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
            orders = db.execute("SELECT id, status FROM orders").fetchall()
            payments = db.execute("SELECT provider_reference, status FROM payments").fetchall()
        db.close()
        if result != [("ok",)]:
            self.fail("integrity_check", f"{result}")
        if skus != ["SMOKE-1"] or emails != [ADMIN, CUSTOMER]:
            self.fail("database", f"expected SMOKE-1 and two accounts, found {skus} and {emails}")
        if orders != [(self.order_id, "paid")] or payments != [(self.payment_reference, "succeeded")]:
            self.fail("database", f"expected one paid order and its payment, found {orders} and {payments}")
        self.ok("PRAGMA integrity_check: ok", "the product, both accounts, the paid order and its payment are on disk")

    def postgres(self) -> None:
        """The same binary on PostgreSQL (asyncpg's native modules bundled): migrate, an admin,
        a server, an order, and the rows in the database; its own database, dropped after.
        Skipped, saying so, where no server answers, unless TILLBOX_REQUIRE_POSTGRES is set."""
        server_url = os.environ.get("TILLBOX_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
        name = f"tillbox_smoke_{os.getpid()}"
        base = server_url.rsplit("/", 1)[0]
        created = subprocess.run(
            ["psql", "-X", "-q", "-d", server_url, "-c", f'CREATE DATABASE "{name}"'],
            capture_output=True,
            text=True,
            check=False,
        )
        if created.returncode != 0:
            if os.environ.get("TILLBOX_REQUIRE_POSTGRES"):
                self.fail("postgres", f"cannot create a database at {server_url}: {created.stderr.strip()}")
            print(f"skip  postgres: no PostgreSQL server at {server_url} ({created.stderr.strip()})", flush=True)
            return
        url = f"{base}/{name}"
        sqlite_env, self.env = self.env, {**self.env, "TILLBOX_DATABASE_URL": url}
        pg_dir = self.workdir / "postgres"
        pg_dir.mkdir()
        try:
            out = self.run("db migrate (postgres)", "db", "migrate", cwd=pg_dir).strip()
            if not re.search(r"is at schema version \d+$", out) or "PostgreSQL database" not in out:
                self.fail("db migrate (postgres)", f"unexpected output {out!r}")
            self.ok("tillbox db migrate on PostgreSQL", out)
            args = ("users", "create", "--email", ADMIN, "--role", "admin", "--password-stdin")
            self.run("users create (postgres)", *args, stdin=PASSWORD + "\n", cwd=pg_dir)
            with (self.workdir / "server.stdout").open("wb") as stdout:
                try:
                    self.server = Server(
                        pg_dir, command=[str(self.binary)], env=self.env, stdout=stdout, ready_timeout=READY_TIMEOUT
                    )
                except ServerFailed as e:
                    self.fail("tillbox serve (postgres)", str(e))
            self.port = self.server.port
            self.ok("tillbox serve on PostgreSQL: /readyz 200", f"after {self.server.ready_seconds:.2f} s")
            credentials = {"email": ADMIN, "password": PASSWORD}
            admin = self.expect("login (postgres)", "POST", "/api/v1/auth/login", 200, credentials)["access_token"]
            new = {"sku": "SMOKE-PG", "name": "Smoke test jug", "price": 500, "stock": 3}
            product = self.expect("create product (postgres)", "POST", "/api/v1/products", 201, new, admin)
            items = {"items": [{"product_id": product["id"], "quantity": 2}]}
            order = self.expect("place order (postgres)", "POST", "/api/v1/orders", 201, items, admin)
            self.stop_server()
            rows = subprocess.run(
                ["psql", "-X", "-At", "-d", url, "-c", "SELECT o.id, p.stock FROM orders o, products p"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.split()
            if rows != [f"{order['id']}|1"]:
                self.fail("postgres", f"expected the order and a stock of 1 in the database, found {rows}")
            self.ok("an order placed on PostgreSQL is in the database", f"{order['id']}, stock 3 -> 1")
        finally:
            self.env = sqlite_env
            subprocess.run(
                ["psql", "-X", "-q", "-d", server_url, "-c", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'],
                capture_output=True,
                check=False,
            )

    def unpacked_cleaned(self) -> None:
        left = [p.name for p in self.unpack_dir.iterdir()]
        if left:
            self.fail("temporary files", f"left in TMPDIR after the runs: {left}")
        self.ok("every run removed its unpacked files from TMPDIR")


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
            smoke.console("TERM=tmux-256color, typed ahead, a refund", typed_ahead=True, refund=True)
            smoke.console("TERM=vt100 NO_COLOR=1", term="vt100", NO_COLOR="1")
            smoke.start_localstripe()
            smoke.start_server()
            smoke.docs()
            smoke.catalog()
            smoke.customer()
            smoke.card_payment()
            smoke.native_modules()
            smoke.stop_server()
            smoke.start_server("--workers", "2")
            smoke.workers()
            smoke.stop_server()
            smoke.database()
            smoke.postgres()
            smoke.unpacked_cleaned()
        finally:
            smoke.kill_server()
            smoke.stop_localstripe()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("smoke test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

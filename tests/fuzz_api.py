"""Fuzz the HTTP API from its own OpenAPI document with schemathesis.

    make fuzz            (or: .venv/bin/python tests/fuzz_api.py [--max-examples 100])

Starts `tillbox serve` on a free port over a fresh data directory with a demo catalog
and an admin, and runs `schemathesis run` against /api/v1/openapi.json as that admin.
Login throttling is loosened for the run (the fuzzer sends hundreds of wrong passwords
from one address and would otherwise lock itself out, as it should). Not part of
`make test`: it takes minutes and some of its reports are inherent (a schema-valid but
common password, a well-formed but stale If-Match); read them, do not count them.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PASSWORD = "a long fuzzing passphrase"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-examples", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tillbox-fuzz-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TILLBOX_")}
        env |= {
            "TILLBOX_DATA_DIR": f"{tmp}/data",
            "TILLBOX_AUTH_LOGIN_FAILURES_PER_IP": "100000",
            "TILLBOX_AUTH_LOGIN_FAILURES_PER_ACCOUNT": "1000",
            "TILLBOX_SERVER_ACCESS_LOG": "false",
        }
        tillbox = [sys.executable, "-m", "entrypoints.cli"]
        subprocess.run([*tillbox, "db", "seed", "--count", "50"], env=env, check=True, capture_output=True)
        subprocess.run(
            [*tillbox, "users", "create", "--email", "admin@fuzz.test", "--role", "admin", "--password-stdin"],
            env=env,
            check=True,
            input=PASSWORD,
            text=True,
            capture_output=True,
        )
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log = Path(f"{tmp}/server.log").open("w")  # noqa: SIM115 - open for the server's whole life
        server = subprocess.Popen([*tillbox, "serve", "--port", str(port)], env=env, stderr=log)
        try:
            for _ in range(200):
                try:
                    urllib.request.urlopen(base + "/readyz", timeout=1)
                    break
                except OSError:
                    time.sleep(0.05)
            request = urllib.request.Request(
                base + "/api/v1/auth/login",
                method="POST",
                headers={"Content-Type": "application/json"},
                data=json.dumps({"email": "admin@fuzz.test", "password": PASSWORD}).encode(),
            )
            token = json.load(urllib.request.urlopen(request))["access_token"]
            result = subprocess.run(
                [
                    str(BIN / "schemathesis"),
                    "run",
                    base + "/api/v1/openapi.json",
                    "-H",
                    f"Authorization: Bearer {token}",
                    "--max-examples",
                    str(args.max_examples),
                    "--workers",
                    "2",
                    # changing the admin's own password would end the run's session
                    "--exclude-operation-id",
                    "change_password",
                ],
                check=False,
            )
        finally:
            server.terminate()
            server.wait(timeout=15)
            log.close()
        errors = [line for line in Path(f"{tmp}/server.log").read_text().splitlines() if '"unhandled error"' in line]
        print(f"server: {len(errors)} unhandled errors (500s) logged")
        return 1 if errors else result.returncode


if __name__ == "__main__":
    raise SystemExit(main())

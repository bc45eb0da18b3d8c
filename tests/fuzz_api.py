"""Fuzz the HTTP API from its own OpenAPI document with schemathesis.

    make fuzz            (or: .venv/bin/python -m tests.fuzz_api [--max-examples 100])

Starts `tillbox serve` (tests/harness.py) over a fresh data directory with a demo catalog
and an admin, and runs `schemathesis run` against /api/v1/openapi.json as that admin.
Login throttling is loosened for the run (the fuzzer sends hundreds of wrong passwords
from one address and would otherwise lock itself out, as it should). Not part of
`make test`: it takes minutes and some of its reports are inherent (a schema-valid but
common password, a well-formed but stale If-Match); read them, do not count them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from tests.harness import Server, environment, run_tillbox

PASSWORD = "a long fuzzing passphrase"
BIN = Path(sys.executable).parent
ADMIN = ("users", "create", "--email", "admin@fuzz.test", "--role", "admin", "--password-stdin")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-examples", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tillbox-fuzz-") as tmp:
        env = environment(
            {
                "TILLBOX_DATA_DIR": f"{tmp}/data",
                "TILLBOX_AUTH_LOGIN_FAILURES_PER_IP": "100000",
                "TILLBOX_AUTH_LOGIN_FAILURES_PER_ACCOUNT": "1000",
                "TILLBOX_SERVER_ACCESS_LOG": "false",
            }
        )
        for command, stdin in ((("db", "seed", "--count", "50"), None), (ADMIN, PASSWORD)):
            done = run_tillbox(*command, cwd=Path(tmp), env=env, stdin=stdin)
            if done.returncode != 0:
                raise SystemExit(f"tillbox {' '.join(command)} failed: {done.stderr}")
        with Server(Path(tmp), env=env) as server:
            request = urllib.request.Request(
                server.base + "/api/v1/auth/login",
                method="POST",
                headers={"Content-Type": "application/json"},
                data=json.dumps({"email": "admin@fuzz.test", "password": PASSWORD}).encode(),
            )
            with urllib.request.urlopen(request) as response:
                token = json.load(response)["access_token"]
            result = subprocess.run(
                [
                    str(BIN / "schemathesis"),
                    "run",
                    server.base + "/api/v1/openapi.json",
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
            server.stop(timeout=15)
        errors = [line for line in server.stderr.splitlines() if '"unhandled error"' in line]
        print(f"server: {len(errors)} unhandled errors (500s) logged")
        return 1 if errors else result.returncode


if __name__ == "__main__":
    raise SystemExit(main())

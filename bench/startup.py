"""Size, start-up time and memory of the ``tillbox`` executable: figures, no assertions.

    python3 bench/startup.py [EXECUTABLE] [--runs 5] [--requests 1000]

EXECUTABLE defaults to dist/tillbox (``make binary``); ``.venv/bin/tillbox`` gives the
same figures without the one-file bootloader, for comparison. Standard library only.

- size of the file;
- ``tillbox version``, exec to exit (median);
- cold start: exec of ``tillbox serve`` to the first 200 from /readyz, polled every
  5 ms, median of N runs each with a fresh data directory (migrations and key
  generation included), then one run on an existing data directory. "Cold" is a new
  process and, for the one-file binary, a fresh unpack into its temporary directory;
  the OS page cache is warm after the first run;
- resident memory (VmRSS, and the peak VmHWM, from /proc/<pid>/status) of an idle server
  after start-up and after a number of requests (catalog list, product, search,
  /users/me with a token, /healthz, over one keep-alive connection), for every
  process of the server: a PyInstaller one-file binary is a bootloader parent that
  unpacks the bundle and waits, and a Python child that serves.

Targets (issue 3): size <= 60 MB, cold start <= 1.0 s median, idle RSS <= 80 MB.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.harness, standard library only like this script

from tests.harness import Server, ServerFailed  # noqa: E402

EMAIL = "bench@example.com"
PASSWORD = "bench start-up passphrase 5521"  # noqa: S105 - a throwaway account in a temporary directory
SEED = 200
MB = 1e6
MIB = 1024 * 1024


def start(executable: Path, workdir: Path) -> Server:
    """``tillbox serve`` in ``workdir``, on the free port it binds, ready (tests/harness.py):
    ``ready_seconds`` is exec to the first 200 from /readyz, polled every 5 ms."""
    try:
        return Server(workdir, command=[str(executable)], env=environment(workdir), poll_seconds=0.005)
    except ServerFailed as e:
        raise SystemExit(str(e)) from None


def environment(workdir: Path) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "LANG": "C.UTF-8"}


def run(executable: Path, workdir: Path, *args: str, stdin: str = "") -> float:
    started = time.perf_counter()
    subprocess.run(
        [str(executable), *args],
        cwd=workdir,
        env=environment(workdir),
        input=stdin,
        text=True,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def size(value: str) -> int:
    """Bytes from a /proc/<pid>/status figure such as ``70560 kB`` (the kernel's kB are KiB)."""
    return int(value.split()[0]) * 1024


def mb(n: float) -> str:
    return f"{n / MB:5.1f} MB ({n / MIB:5.1f} MiB)"


def memory(server: Server, label: str) -> None:
    pids = [server.process.pid, *server.descendants()]
    total = 0
    for pid in pids:
        fields = status(pid)
        role = "bootloader (parent)" if pid == server.process.pid and len(pids) > 1 else "Python (serves)"
        rss = size(fields["VmRSS"])
        total += rss
        print(f"  {label:<26} pid {pid:<7} {role:<19}  RSS {mb(rss)}   peak {mb(size(fields['VmHWM']))}")
        anon, files = size(fields["RssAnon"]), size(fields["RssFile"]) + size(fields["RssShmem"])
        print(f"  {'':<26} {'':<31}  of which heap and stacks {anon / MB:.1f} MB, mapped files {files / MB:.1f} MB")
    if len(pids) > 1:
        print(f"  {label:<26} {'all processes':<31}  RSS {mb(total)}")


def load(port: int, requests: int) -> float:
    """Send ``requests`` requests over one keep-alive connection; return requests per second."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def call(method: str, path: str, body: object = None, token: str = "") -> object:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        connection.request(method, path, json.dumps(body) if body is not None else None, headers)
        response = connection.getresponse()
        raw = response.read()
        if response.status != 200:
            raise SystemExit(f"{method} {path} answered {response.status}: {raw[:200]!r}")
        return json.loads(raw) if response.getheader("Content-Type", "").startswith("application/json") else raw

    token = call("POST", "/api/v1/auth/login", {"email": EMAIL, "password": PASSWORD})["access_token"]  # type: ignore[index]
    page = call("GET", "/api/v1/products?limit=20")
    ids = [p["id"] for p in page["data"]]  # type: ignore[index]
    paths = [
        ("/api/v1/products?limit=20", ""),
        (f"/api/v1/products/{ids[0]}", ""),
        ("/api/v1/products?q=lamp", ""),
        ("/api/v1/users/me", token),
        ("/healthz", ""),
    ]
    started = time.perf_counter()
    for n in range(requests):
        path, bearer = paths[n % len(paths)]
        call("GET", path, token=bearer)
    elapsed = time.perf_counter() - started
    connection.close()
    return requests / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("executable", nargs="?", default=str(ROOT / "dist" / "tillbox"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    executable = Path(args.executable).absolute()
    if not executable.is_file():
        print(f"{executable} does not exist (make binary)", file=sys.stderr)
        return 1

    scratch = Path(tempfile.mkdtemp(prefix="tillbox-startup-"))
    try:
        averages = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"machine           {os.cpu_count()} CPUs, load average {averages} (1, 5, 15 min) at the start")
        print(f"executable        {executable}")
        print(f"size              {mb(executable.stat().st_size)}        target <= 60 MB")

        versions = [run(executable, scratch, "version") for _ in range(args.runs)]
        print(f"tillbox version   median {statistics.median(versions):.3f} s   (runs: {fmt(versions)})")

        starts = []
        for n in range(args.runs):
            workdir = scratch / f"fresh-{n}"
            workdir.mkdir()
            with start(executable, workdir) as server:
                starts.append(server.ready_seconds)
                server.stop()
        print(f"cold start        median {statistics.median(starts):.3f} s   (runs: {fmt(starts)})   target <= 1.0 s")
        print("                  exec of `tillbox serve` to /readyz 200, fresh data directory each run")

        workdir = scratch / "fresh-0"  # its data directory exists now: no migrations, no new keys
        with start(executable, workdir) as server:
            existing = server.ready_seconds
            server.stop()
        print(f"existing data dir {existing:.3f} s")

        workdir = scratch / "memory"
        workdir.mkdir()
        run(executable, workdir, "db", "seed", "--count", str(SEED))
        run(executable, workdir, "users", "create", "--email", EMAIL, "--password-stdin", stdin=PASSWORD + "\n")
        with start(executable, workdir) as server:
            time.sleep(1.0)  # a measurement of an idle server, not a wait for something
            print(f"memory            ({SEED} products seeded)                         target idle RSS <= 80 MB")
            memory(server, "idle after start-up")
            rate = load(server.port, args.requests)
            time.sleep(1.0)
            memory(server, f"idle after {args.requests} requests")
            print(f"                  ({args.requests} requests at {rate:.0f}/s, one connection, sequential)")
            server.stop()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"load average      {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end")
    return 0


def fmt(values: list[float]) -> str:
    return " ".join(f"{v:.3f}" for v in values)


if __name__ == "__main__":
    sys.exit(main())

"""The connection cap fits the process's open-file limit: raised where the hard limit
allows, lowered (with a warning) where it does not. Each case runs in a process of its own,
since a lowered hard limit cannot be raised again."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, logging, resource, sys
from entrypoints.http.connections import fit_open_files
from entrypoints.logs import configure_logging
configure_logging("info")
soft, hard = (int(n) for n in sys.argv[1:3])
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
cap = fit_open_files(int(sys.argv[3]))
print(json.dumps({"cap": cap, "limit": resource.getrlimit(resource.RLIMIT_NOFILE)}))
"""


def _fit(soft: int, hard: int, wanted: int) -> tuple[dict[str, object], list[dict[str, object]]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(soft), str(hard), str(wanted)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout), [json.loads(line) for line in done.stderr.splitlines()]


def test_the_soft_limit_is_raised_to_fit_the_cap() -> None:
    result, logs = _fit(256, 4096, 1000)
    assert result["cap"] == 1000
    soft, hard = result["limit"]  # type: ignore[misc]
    assert 1000 + 128 < soft <= hard == 4096
    assert logs == []


def test_a_hard_limit_too_low_lowers_the_cap_and_says_how_to_keep_it() -> None:
    result, logs = _fit(256, 512, 1000)
    soft, hard = result["limit"]  # type: ignore[misc]
    assert (soft, hard) == (512, 512)
    cap = result["cap"]
    assert isinstance(cap, int) and 0 < cap < 512 - 128
    [warning] = logs
    assert warning["level"] == "warning" and "ulimit -n" in str(warning["message"])
    assert (warning["max_connections"], warning["lowered_to"], warning["open_file_limit"]) == (1000, cap, 512)


def test_a_cap_that_fits_changes_nothing() -> None:
    result, logs = _fit(2048, 4096, 100)
    assert result == {"cap": 100, "limit": [2048, 4096]}
    assert logs == []

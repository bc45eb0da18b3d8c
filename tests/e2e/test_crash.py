"""The crash test (tests/crash/crash.py) with 20 SIGKILL cycles, in every `make test`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.crash.crash import run


@pytest.mark.timeout(600)
def test_sigkill_during_orders_and_payments_loses_and_doubles_nothing(tmp_path: Path) -> None:
    problems = asyncio.run(run(cycles=20, clients=8, seed=7, workdir=tmp_path))
    assert problems == []

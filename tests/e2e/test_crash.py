"""The crash test (tests/crash/crash.py) in every `make test`: 20 SIGKILL cycles on SQLite,
10 on PostgreSQL (where the server's side of a killed process is the database's to roll
back, and fewer cycles show it as well)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.crash.crash import run
from tests.e2e.conftest import Store, on_every_store

pytestmark = on_every_store

CYCLES = {"sqlite": 20, "postgres": 10}


@pytest.mark.timeout(600)
async def test_sigkill_during_orders_and_payments_loses_and_doubles_nothing(tmp_path: Path, store: Store) -> None:
    problems = await run(cycles=CYCLES[store.kind], clients=8, seed=7, workdir=tmp_path, database_url=store.url)
    assert problems == []

"""A use case the store gave up for a conflict (TransactionConflict) runs again, invisibly
to the client, a bounded number of times, and only while nothing of it was kept."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from aiohttp import web

from core.domain.errors import TransactionConflict
from core.ports.unit_of_work import commits_in_context, count_commit
from entrypoints.http import api


@attrs.define
class _Op:
    conflicts: int  # how many runs fail before one succeeds
    commit_first: bool = False  # whether each run commits a unit before its conflict
    runs: int = 0

    async def handler(self, request: Any, i: Any) -> web.StreamResponse:
        self.runs += 1
        if self.commit_first:
            count_commit()
        if self.runs <= self.conflicts:
            raise TransactionConflict()
        return web.Response(status=201)


async def test_a_conflict_is_run_again_until_it_succeeds() -> None:
    op = _Op(conflicts=api.TRANSACTION_RETRIES)
    response = await api._run(op, None, None)  # type: ignore[arg-type]
    assert (response.status, op.runs) == (201, api.TRANSACTION_RETRIES + 1)


async def test_conflicts_past_the_bound_reach_the_client() -> None:
    op = _Op(conflicts=api.TRANSACTION_RETRIES + 1)
    with pytest.raises(TransactionConflict) as raised:
        await api._run(op, None, None)  # type: ignore[arg-type]
    assert op.runs == api.TRANSACTION_RETRIES + 1
    assert (raised.value.code, raised.value.retry_after) == ("transaction_conflict", 1)


async def test_a_use_case_that_kept_something_is_not_run_again() -> None:
    op = _Op(conflicts=1, commit_first=True)
    before = commits_in_context.get()
    with pytest.raises(TransactionConflict):
        await api._run(op, None, None)  # type: ignore[arg-type]
    assert op.runs == 1
    assert commits_in_context.get() == before + 1

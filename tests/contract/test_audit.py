"""AuditLog: every adapter behaves the same (see core/ports/repositories.py)."""

from __future__ import annotations

import pytest

from core.domain.audit import AuditEntry
from core.domain.pagination import Page, PageRequest
from core.ports.repositories import AuditFilter
from core.ports.unit_of_work import UnitOfWorkFactory
from tests.contract.builders import Make, store
from tests.fakes import FixedClock


async def _list(uow_factory: UnitOfWorkFactory, page: PageRequest, f: AuditFilter) -> Page[AuditEntry]:
    async with uow_factory(readonly=True) as uow:
        return await uow.audit.list(page, f)


async def test_an_entry_reads_back_exactly_as_appended(uow_factory: UnitOfWorkFactory, make: Make) -> None:
    details = {
        "before": 4999,
        "after": None,
        "reason": "Inventur – März ✓",
        "lines": [{"sku": "LAMP-1", "quantity": 2}],
        "flag": True,
        "ratio": 0.25,
    }
    entry = make.audit_entry("product.price_changed", details=details)
    bare = make.audit_entry("auth.login_failed", actor_id=None, object_type="user", object_id=None, source_ip=None)
    await store(uow_factory, entry, bare)

    page = await _list(uow_factory, PageRequest(), AuditFilter())
    assert page == Page(items=[bare, entry], next_after=None)
    assert page.items[1].details == details
    assert page.items[0].details == {}


async def test_the_log_is_newest_first_and_paginated_by_the_last_id(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock
) -> None:
    entries = []
    for n in range(5):
        entries.append(make.audit_entry(f"thing.happened_{n}"))
        clock.advance(seconds=1)
    await store(uow_factory, *entries)
    newest_first = entries[::-1]

    first = await _list(uow_factory, PageRequest(limit=2), AuditFilter())
    second = await _list(uow_factory, PageRequest(limit=2, after=first.next_after), AuditFilter())
    third = await _list(uow_factory, PageRequest(limit=2, after=second.next_after), AuditFilter())
    everything = await _list(uow_factory, PageRequest(limit=5), AuditFilter())

    assert (first.items, first.has_more) == (newest_first[0:2], True)
    assert (second.items, second.has_more) == (newest_first[2:4], True)
    assert third == Page(items=newest_first[4:5], next_after=None)
    assert everything == Page(items=newest_first, next_after=None)


@pytest.mark.parametrize(
    ("f", "expected"),
    [
        (AuditFilter(), [5, 4, 3, 2, 1, 0]),
        (AuditFilter(actor_id="usr_a"), [3, 1, 0]),
        (AuditFilter(action="product.price_changed"), [4, 2, 0]),
        (AuditFilter(object_type="user"), [5, 3]),
        (AuditFilter(object_id="prd_1"), [2, 1, 0]),
        (AuditFilter(object_type="product", object_id="prd_1"), [2, 1, 0]),
        (AuditFilter(object_type="user", object_id="prd_1"), []),
        (AuditFilter(actor_id="usr_a", action="product.price_changed"), [0]),
        (AuditFilter(actor_id="usr_a", action="product.price_changed", object_type="product", object_id="prd_1"), [0]),
        (AuditFilter(actor_id="usr_nobody"), []),
    ],
)
async def test_the_log_filters_by_actor_action_and_object(
    uow_factory: UnitOfWorkFactory, make: Make, f: AuditFilter, expected: list[int]
) -> None:
    entries = [
        make.audit_entry("product.price_changed", actor_id="usr_a", object_id="prd_1"),  # 0
        make.audit_entry("product.stock_adjusted", actor_id="usr_a", object_id="prd_1"),  # 1
        make.audit_entry("product.price_changed", actor_id="usr_b", object_id="prd_1"),  # 2
        make.audit_entry("user.role_changed", actor_id="usr_a", object_type="user", object_id="usr_b"),  # 3
        make.audit_entry("product.price_changed", actor_id=None, object_id="prd_2"),  # 4
        make.audit_entry("auth.login_failed", actor_id=None, object_type="user", object_id=None),  # 5
    ]
    await store(uow_factory, *entries)

    page = await _list(uow_factory, PageRequest(limit=100), f)
    assert page == Page(items=[entries[n] for n in expected], next_after=None)


async def test_filtered_pages_continue_after_the_last_id(uow_factory: UnitOfWorkFactory, make: Make) -> None:
    entries = [make.audit_entry("user.login", actor_id="usr_a" if n % 2 else "usr_b") for n in range(7)]
    await store(uow_factory, *entries)
    by_a = [e for e in reversed(entries) if e.actor_id == "usr_a"]

    first = await _list(uow_factory, PageRequest(limit=2), AuditFilter(actor_id="usr_a"))
    second = await _list(uow_factory, PageRequest(limit=2, after=first.next_after), AuditFilter(actor_id="usr_a"))

    assert (first.items, first.has_more) == (by_a[:2], True)
    assert second == Page(items=by_a[2:], next_after=None)

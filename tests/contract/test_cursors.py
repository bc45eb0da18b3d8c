"""Cursors of every list: opaque, made by the adapter, bound to their list, sort and filters
(see core/ports/repositories.py). Anything else given as a cursor is InvalidCursor, never a
first page, whichever adapter is behind the list."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from core.domain.errors import InvalidCursor
from core.domain.pagination import Page, PageRequest
from core.domain.users import Role
from core.ports.repositories import AuditFilter, OrderFilter, ProductFilter, ProductSort, UserFilter
from core.ports.unit_of_work import UnitOfWork, UnitOfWorkFactory
from tests.contract.builders import Make, store

Lister = Callable[[UnitOfWork, PageRequest], Awaitable[Page[Any]]]

LISTS: dict[str, Lister] = {
    "users": lambda uow, page: uow.users.list(page, UserFilter()),
    "products": lambda uow, page: uow.products.list(page, ProductFilter()),
    "product_versions": lambda uow, page: uow.products.list_versions(page, ProductFilter()),
    "products_by_price": lambda uow, page: uow.products.list(page, ProductFilter(), ProductSort.PRICE),
    "products_by_name_desc": lambda uow, page: uow.products.list(page, ProductFilter(), ProductSort.NAME_DESC),
    "orders": lambda uow, page: uow.orders.list(page, OrderFilter()),
    "audit": lambda uow, page: uow.audit.list(page, AuditFilter()),
}


@pytest.fixture
async def filled(uow_factory: UnitOfWorkFactory, make: Make) -> UnitOfWorkFactory:
    """Three of everything a list lists: every list has a second page."""
    await store(
        uow_factory,
        *(make.user(f"u{n}@example.com") for n in range(3)),
        *(make.product(f"SKU-{n}", name=f"Thing {n}", price=100 * n) for n in range(3)),
        *(make.order() for _ in range(3)),
        *(make.audit_entry("thing.happened") for _ in range(3)),
    )
    return uow_factory


async def _first_page(factory: UnitOfWorkFactory, which: str) -> Page[Any]:
    async with factory(readonly=True) as uow:
        page = await LISTS[which](uow, PageRequest(limit=1))
    assert page.has_more and page.next_after is not None
    return page


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


@pytest.mark.parametrize("which", list(LISTS))
@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "x" * 300,
        "usr_000000000001",  # an id is not a cursor (whatever a cursor is)
        "prd_000000000004",
        "ord_000000000007",
        "aud_000000000010",
        "1",
        "-1",
        "null",
        "[]",
        '{"list": ["nothing"], "after": ["usr_000000000001"]}',
        _b64('["bound", "usr_000000000001"]'),
        _b64("[]"),
        _b64("null"),
        "%00",
        "\u00e9\u00e9",
        "WyJ",
        "====",
    ],
)
async def test_anything_but_its_own_cursor_is_refused(filled: UnitOfWorkFactory, which: str, cursor: str) -> None:
    async with filled(readonly=True) as uow:
        with pytest.raises(InvalidCursor) as caught:
            await LISTS[which](uow, PageRequest(limit=1, after=cursor))
    assert caught.value.code == "invalid_cursor"


@pytest.mark.parametrize("which", list(LISTS))
async def test_an_edited_cursor_is_refused(filled: UnitOfWorkFactory, which: str) -> None:
    cursor = (await _first_page(filled, which)).next_after
    assert cursor is not None
    edits = {cursor[:-1], cursor + "A", cursor[1:], cursor[::-1], cursor.upper(), cursor.lower()} - {cursor}
    async with filled(readonly=True) as uow:
        for edited in edits:
            with pytest.raises(InvalidCursor):
                await LISTS[which](uow, PageRequest(limit=1, after=edited))


@pytest.mark.parametrize("which", list(LISTS))
@pytest.mark.parametrize("other", list(LISTS))
async def test_a_cursor_continues_only_its_own_list_and_sort(filled: UnitOfWorkFactory, which: str, other: str) -> None:
    cursor = (await _first_page(filled, which)).next_after
    async with filled(readonly=True) as uow:
        if {which, other} <= {"products", "product_versions"}:
            # The same list, sort and filters: list_versions is list's page, cursor included.
            assert (await LISTS[other](uow, PageRequest(limit=1, after=cursor))).items
        elif which == other:
            assert (await LISTS[other](uow, PageRequest(limit=1, after=cursor))).items
        else:
            with pytest.raises(InvalidCursor):
                await LISTS[other](uow, PageRequest(limit=1, after=cursor))


@pytest.mark.parametrize(
    ("made_with", "used_with"),
    [
        (ProductFilter(), ProductFilter(active=True)),
        (ProductFilter(active=True), ProductFilter(active=False)),
        (ProductFilter(price_min=0), ProductFilter(price_min=1)),
        (ProductFilter(price_max=500), ProductFilter()),
        (ProductFilter(text="thing"), ProductFilter(text="things")),
        (ProductFilter(text="thing"), ProductFilter()),
    ],
)
async def test_a_product_cursor_is_bound_to_its_filters(
    filled: UnitOfWorkFactory, made_with: ProductFilter, used_with: ProductFilter
) -> None:
    async with filled(readonly=True) as uow:
        for sort in ProductSort:
            page = await uow.products.list(PageRequest(limit=1), made_with, sort)
            assert page.next_after is not None, sort
            assert (await uow.products.list(PageRequest(limit=1, after=page.next_after), made_with, sort)).items
            with pytest.raises(InvalidCursor):
                await uow.products.list(PageRequest(limit=1, after=page.next_after), used_with, sort)
            for other in ProductSort:
                if other is not sort:
                    with pytest.raises(InvalidCursor):
                        await uow.products.list(PageRequest(limit=1, after=page.next_after), made_with, other)


@pytest.mark.parametrize(
    ("made_with", "used_with"),
    [
        (UserFilter(), UserFilter(role=Role.CUSTOMER)),
        (UserFilter(role=Role.CUSTOMER), UserFilter(role=Role.STAFF)),
    ],
)
async def test_a_user_cursor_is_bound_to_its_filters(
    filled: UnitOfWorkFactory, made_with: UserFilter, used_with: UserFilter
) -> None:
    async with filled(readonly=True) as uow:
        page = await uow.users.list(PageRequest(limit=1), made_with)
        with pytest.raises(InvalidCursor):
            await uow.users.list(PageRequest(limit=1, after=page.next_after), used_with)


async def test_order_and_audit_cursors_are_bound_to_their_filters(filled: UnitOfWorkFactory) -> None:
    async with filled(readonly=True) as uow:
        orders = await uow.orders.list(PageRequest(limit=1), OrderFilter(customer_id="usr_000000000099"))
        with pytest.raises(InvalidCursor):
            await uow.orders.list(PageRequest(limit=1, after=orders.next_after), OrderFilter())
        entries = await uow.audit.list(PageRequest(limit=1), AuditFilter(action="thing.happened"))
        with pytest.raises(InvalidCursor):
            await uow.audit.list(PageRequest(limit=1, after=entries.next_after), AuditFilter(action="other"))

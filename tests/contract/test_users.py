"""UserRepository: every adapter behaves the same (see core/ports/repositories.py)."""

from __future__ import annotations

import pytest

from core.domain.errors import EmailTaken
from core.domain.pagination import Page, PageRequest
from core.domain.users import Role, UserStatus
from core.ports.repositories import UserFilter
from core.ports.unit_of_work import UnitOfWorkFactory
from tests.contract.builders import Make, store
from tests.fakes import FixedClock


async def test_a_user_reads_back_exactly_as_added(uow_factory: UnitOfWorkFactory, make: Make) -> None:
    ada = make.user("ada@example.com", role=Role.STAFF)
    await store(uow_factory, ada)

    async with uow_factory(readonly=True) as uow:
        assert await uow.users.get(ada.id) == ada
        assert await uow.users.get_by_email("ada@example.com") == ada


async def test_unknown_ids_and_emails_read_as_none(uow_factory: UnitOfWorkFactory, make: Make) -> None:
    await store(uow_factory, make.user("ada@example.com"))

    async with uow_factory(readonly=True) as uow:
        assert await uow.users.get("usr_nobody") is None
        assert await uow.users.get_by_email("bob@example.com") is None
        assert await uow.users.get_by_email("ADA@example.com") is None  # callers pass the normalized form


async def test_a_taken_email_is_refused_and_the_first_account_kept(uow_factory: UnitOfWorkFactory, make: Make) -> None:
    ada = make.user("ada@example.com")
    await store(uow_factory, ada)
    impostor = make.user("ada@example.com", role=Role.ADMIN)

    async with uow_factory() as uow:
        with pytest.raises(EmailTaken):
            await uow.users.add(impostor)
        await uow.commit()

    async with uow_factory(readonly=True) as uow:
        assert await uow.users.get_by_email("ada@example.com") == ada
        assert await uow.users.get(impostor.id) is None


async def test_update_persists_role_status_password_hash_and_updated_at(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock
) -> None:
    ada = make.user("ada@example.com")
    await store(uow_factory, ada)
    clock.advance(minutes=5)

    async with uow_factory() as uow:
        user = await uow.users.get(ada.id)
        assert user is not None
        user.change_role(Role.ADMIN, at=clock.now())
        user.change_status(UserStatus.DISABLED, at=clock.now())
        user.change_password_hash("fake$new", at=clock.now())
        await uow.users.update(user)
        await uow.commit()

    async with uow_factory(readonly=True) as uow:
        stored = await uow.users.get(ada.id)
    assert stored is not None
    assert (stored.role, stored.status, stored.password_hash) == (Role.ADMIN, UserStatus.DISABLED, "fake$new")
    assert stored.updated_at == clock.now()
    assert stored.created_at == ada.created_at


async def test_lists_are_ordered_by_id_and_paginated_by_the_last_id(uow_factory: UnitOfWorkFactory, make: Make) -> None:
    users = [make.user(f"user{n}@example.com") for n in range(5)]
    await store(uow_factory, *reversed(users))  # insertion order does not matter

    async with uow_factory(readonly=True) as uow:
        first = await uow.users.list(PageRequest(limit=2), UserFilter())
        second = await uow.users.list(PageRequest(limit=2, after=first.next_after), UserFilter())
        third = await uow.users.list(PageRequest(limit=2, after=second.next_after), UserFilter())
        everything = await uow.users.list(PageRequest(limit=5), UserFilter())

    assert (first.items, first.has_more) == (users[0:2], True)
    assert (second.items, second.has_more) == (users[2:4], True)
    assert third == Page(items=users[4:5], next_after=None)
    assert everything == Page(items=users, next_after=None)  # exactly `limit` left: no next page


async def test_lists_filter_by_role_status_and_email(uow_factory: UnitOfWorkFactory, make: Make) -> None:
    customer = make.user("c@example.com")
    staff = make.user("s@example.com", role=Role.STAFF)
    disabled_staff = make.user("d@example.com", role=Role.STAFF, status=UserStatus.DISABLED)
    admin = make.user("a@example.com", role=Role.ADMIN)
    await store(uow_factory, customer, staff, disabled_staff, admin)

    async def ids(f: UserFilter) -> list[str]:
        async with uow_factory(readonly=True) as uow:
            return [u.id for u in (await uow.users.list(PageRequest(limit=10), f)).items]

    assert await ids(UserFilter(role=Role.STAFF)) == [staff.id, disabled_staff.id]
    assert await ids(UserFilter(status=UserStatus.ACTIVE)) == [customer.id, staff.id, admin.id]
    assert await ids(UserFilter(role=Role.STAFF, status=UserStatus.ACTIVE)) == [staff.id]
    assert await ids(UserFilter(email="a@example.com")) == [admin.id]
    assert await ids(UserFilter(email="a@example.com", role=Role.CUSTOMER)) == []


async def test_filtered_pages_continue_after_the_last_id(uow_factory: UnitOfWorkFactory, make: Make) -> None:
    users = [make.user(f"u{n}@example.com", role=Role.STAFF if n % 2 else Role.CUSTOMER) for n in range(7)]
    await store(uow_factory, *users)
    staff = [u for u in users if u.role is Role.STAFF]

    async with uow_factory(readonly=True) as uow:
        first = await uow.users.list(PageRequest(limit=2), UserFilter(role=Role.STAFF))
        second = await uow.users.list(PageRequest(limit=2, after=first.next_after), UserFilter(role=Role.STAFF))

    assert (first.items, first.has_more) == (staff[:2], True)
    assert second == Page(items=staff[2:], next_after=None)

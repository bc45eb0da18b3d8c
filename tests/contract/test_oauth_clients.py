"""OAuthClientRepository: every adapter behaves the same (see core/ports/repositories.py)."""

from __future__ import annotations

import asyncio

import pytest

from core.domain.errors import InvalidCursor
from core.domain.oauth import ClientStatus, ClientType, GrantType
from core.domain.pagination import Page, PageRequest
from core.ports.repositories import OAuthClientFilter
from core.ports.unit_of_work import UnitOfWorkFactory
from tests.contract.builders import START, Make, store
from tests.fakes import FixedClock


async def test_a_client_reads_back_exactly_as_added(uow_factory: UnitOfWorkFactory, make: Make) -> None:
    confidential = make.oauth_client(
        "Back office",
        redirect_uris=("https://office.example.com/cb?x=1", "http://127.0.0.1:8400/cb"),
        grant_types=(GrantType.AUTHORIZATION_CODE, GrantType.REFRESH_TOKEN, GrantType.CLIENT_CREDENTIALS),
        scopes=("catalog:read", "catalog:write", "clients:read"),
    )
    public = make.oauth_client(
        "Mobile", type=ClientType.PUBLIC, grant_types=(GrantType.AUTHORIZATION_CODE,), created_by=None
    )
    await store(uow_factory, confidential, public)

    async with uow_factory(readonly=True) as uow:
        stored = await uow.oauth_clients.get(confidential.id)
        stored_public = await uow.oauth_clients.get(public.id)
        assert await uow.oauth_clients.get("cli_nobody") is None
    assert stored == confidential
    assert stored_public == public
    assert stored is not None and stored_public is not None
    assert stored.redirect_uris == ("https://office.example.com/cb?x=1", "http://127.0.0.1:8400/cb")
    assert (stored.secret_digest, stored.secret_rotated_at) == ("digest-of-Back office", START)
    assert (stored_public.secret_digest, stored_public.secret_rotated_at, stored_public.created_by) == (
        None,
        None,
        None,
    )


async def test_update_persists_every_changeable_field(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock
) -> None:
    client = make.oauth_client()
    await store(uow_factory, client)
    clock.advance(minutes=5)

    async with uow_factory() as uow:
        loaded = await uow.oauth_clients.get(client.id)
        assert loaded is not None
        loaded.update(
            at=clock.now(),
            name="Renamed",
            redirect_uris=["https://new.example.com/cb", "https://new.example.com/other"],
            grant_types=[GrantType.CLIENT_CREDENTIALS],
            scopes=["users:read"],
        )
        loaded.disable(at=clock.now())
        loaded.rotate_secret("a new digest", at=clock.now())
        await uow.oauth_clients.update(loaded)
        await uow.commit()

    async with uow_factory(readonly=True) as uow:
        stored = await uow.oauth_clients.get(client.id)
    assert stored == loaded
    assert stored is not None
    assert stored.name == "Renamed"
    assert stored.redirect_uris == ("https://new.example.com/cb", "https://new.example.com/other")
    assert stored.grant_types == (GrantType.CLIENT_CREDENTIALS,)
    assert stored.scopes == ("users:read",)
    assert stored.status is ClientStatus.DISABLED
    assert (stored.secret_digest, stored.secret_rotated_at) == ("a new digest", clock.now())
    assert (stored.created_at, stored.updated_at) == (START, clock.now())


async def test_an_update_left_uncommitted_changes_nothing(uow_factory: UnitOfWorkFactory, make: Make) -> None:
    client = make.oauth_client()
    await store(uow_factory, client)

    async with uow_factory() as uow:
        loaded = await uow.oauth_clients.get(client.id)
        assert loaded is not None
        loaded.disable(at=START)
        await uow.oauth_clients.update(loaded)

    async with uow_factory(readonly=True) as uow:
        assert await uow.oauth_clients.get(client.id) == client


async def test_lists_are_ordered_by_id_and_paginated(uow_factory: UnitOfWorkFactory, make: Make) -> None:
    clients = [make.oauth_client(f"App {n}") for n in range(5)]
    await store(uow_factory, *reversed(clients))

    async with uow_factory(readonly=True) as uow:
        first = await uow.oauth_clients.list(PageRequest(limit=2), OAuthClientFilter())
        second = await uow.oauth_clients.list(PageRequest(limit=2, after=first.next_after), OAuthClientFilter())
        third = await uow.oauth_clients.list(PageRequest(limit=2, after=second.next_after), OAuthClientFilter())
        everything = await uow.oauth_clients.list(PageRequest(limit=5), OAuthClientFilter())

    assert (first.items, first.has_more) == (clients[0:2], True)
    assert (second.items, second.has_more) == (clients[2:4], True)
    assert third == Page(items=clients[4:5], next_after=None)
    assert everything == Page(items=clients, next_after=None)


async def test_lists_filter_by_status_and_bind_their_cursor_to_it(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock
) -> None:
    clients = [make.oauth_client(f"App {n}") for n in range(5)]
    for client in clients[1::2]:
        client.disable(at=clock.now())
    await store(uow_factory, *clients)

    async with uow_factory(readonly=True) as uow:
        active = await uow.oauth_clients.list(PageRequest(limit=2), OAuthClientFilter(status=ClientStatus.ACTIVE))
        rest = await uow.oauth_clients.list(
            PageRequest(limit=2, after=active.next_after), OAuthClientFilter(status=ClientStatus.ACTIVE)
        )
        disabled = await uow.oauth_clients.list(PageRequest(limit=10), OAuthClientFilter(status=ClientStatus.DISABLED))
        with pytest.raises(InvalidCursor):
            await uow.oauth_clients.list(
                PageRequest(limit=2, after=active.next_after), OAuthClientFilter(status=ClientStatus.DISABLED)
            )
        with pytest.raises(InvalidCursor):
            await uow.oauth_clients.list(PageRequest(limit=2, after="not a cursor"), OAuthClientFilter())

    assert [c.id for c in active.items] == [clients[0].id, clients[2].id]
    assert rest == Page(items=[clients[4]], next_after=None)
    assert [c.id for c in disabled.items] == [clients[1].id, clients[3].id]


async def test_a_write_unit_that_reads_a_client_holds_it_until_it_ends(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock
) -> None:
    # Two admins change the same client at once: the second reads what the first saved, so
    # neither change is lost (the port's promise for get in a write unit).
    client = make.oauth_client()
    await store(uow_factory, client)
    first_read = asyncio.Event()

    async def rename(name: str, wait: bool) -> None:
        async with uow_factory() as uow:
            loaded = await uow.oauth_clients.get(client.id)
            assert loaded is not None
            if wait:
                first_read.set()
                await asyncio.sleep(0)  # let the other unit try to read meanwhile
            loaded.update(at=clock.now(), name=loaded.name + name)
            await uow.oauth_clients.update(loaded)
            await uow.commit()

    async def second() -> None:
        await first_read.wait()
        await rename(" B", wait=False)

    await asyncio.gather(rename(" A", wait=True), second())

    async with uow_factory(readonly=True) as uow:
        stored = await uow.oauth_clients.get(client.id)
    assert stored is not None
    assert stored.name == "Shop app A B"

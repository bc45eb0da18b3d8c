"""ApiKeyRepository: every adapter behaves the same (see core/ports/repositories.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.domain.api_keys import ApiKey
from core.domain.errors import InvalidCursor
from core.domain.pagination import PageRequest
from core.domain.users import Role, User
from core.ports.repositories import ApiKeyFilter
from core.ports.unit_of_work import UnitOfWorkFactory
from tests.contract.builders import START, Make, store
from tests.fakes import FixedClock


@pytest.fixture
async def ada(uow_factory: UnitOfWorkFactory, make: Make) -> User:
    user = make.user("ada@example.com", role=Role.ADMIN)
    await store(uow_factory, user)
    return user


async def _by_digest(uow_factory: UnitOfWorkFactory, digest: str) -> ApiKey | None:
    async with uow_factory(readonly=True) as uow:
        return await uow.api_keys.get_by_digest(digest)


async def _get(uow_factory: UnitOfWorkFactory, key_id: str) -> ApiKey | None:
    async with uow_factory(readonly=True) as uow:
        return await uow.api_keys.get(key_id)


async def test_a_key_reads_back_exactly_by_its_id_and_by_its_digest(
    uow_factory: UnitOfWorkFactory, make: Make, ada: User
) -> None:
    scopes = frozenset({"orders:read", "catalog:read", "audit:read"})
    key = make.api_key(ada, "digest-1", scopes=scopes, name="Nightly export – ünïcode")
    await store(uow_factory, key)

    expected = ApiKey(
        id=key.id,
        user_id=ada.id,
        name="Nightly export – ünïcode",
        scopes=scopes,
        secret_digest="digest-1",
        created_at=START,
        expires_at=START + timedelta(days=90),
        last_used_at=None,
        revoked_at=None,
    )
    assert await _by_digest(uow_factory, "digest-1") == expected
    assert await _get(uow_factory, key.id) == expected
    assert await _by_digest(uow_factory, "digest-2") is None
    assert await _get(uow_factory, "key_unknown") is None


async def test_update_persists_revocation_and_last_use_only(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock, ada: User
) -> None:
    key = make.api_key(ada, "digest-1")
    await store(uow_factory, key)
    used, revoked = clock.now() + timedelta(minutes=3), clock.now() + timedelta(minutes=5)

    async with uow_factory() as uow:
        stored = await uow.api_keys.get(key.id)
        assert stored is not None
        stored.last_used_at, stored.revoked_at = used, revoked
        stored.name = "renamed"  # not a change the port persists
        await uow.api_keys.update(stored)
        await uow.commit()

    again = await _get(uow_factory, key.id)
    assert again is not None
    assert (again.name, again.last_used_at, again.revoked_at) == ("script", used, revoked)


async def test_a_use_is_recorded_unless_one_was_recorded_since(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock, ada: User
) -> None:
    key = make.api_key(ada, "digest-1")
    await store(uow_factory, key)
    first = clock.now() + timedelta(seconds=10)

    async with uow_factory() as uow:
        assert await uow.api_keys.record_use(key.id, first, unless_since=first - timedelta(minutes=1)) is True
        await uow.commit()
    later = first + timedelta(seconds=30)
    async with uow_factory() as uow:
        # Recorded 30 s ago: within the minute, nothing changes.
        assert await uow.api_keys.record_use(key.id, later, unless_since=later - timedelta(minutes=1)) is False
        assert await uow.api_keys.record_use("key_unknown", later, unless_since=later) is False
        await uow.commit()
    assert (await _get(uow_factory, key.id)).last_used_at == first  # type: ignore[union-attr]

    much_later = first + timedelta(minutes=1)
    async with uow_factory() as uow:
        assert await uow.api_keys.record_use(key.id, much_later, unless_since=much_later - timedelta(minutes=1))
        await uow.commit()
    assert (await _get(uow_factory, key.id)).last_used_at == much_later  # type: ignore[union-attr]


async def test_recording_a_use_never_undoes_a_revocation(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock, ada: User
) -> None:
    key = make.api_key(ada, "digest-1")
    await store(uow_factory, key)
    async with uow_factory() as uow:
        stored = await uow.api_keys.get(key.id)
        assert stored is not None and stored.revoke(clock.now())
        await uow.api_keys.update(stored)
        await uow.commit()

    at = clock.now() + timedelta(seconds=1)
    async with uow_factory() as uow:
        assert await uow.api_keys.record_use(key.id, at, unless_since=at - timedelta(minutes=1)) is True
        await uow.commit()
    stored = await _get(uow_factory, key.id)
    assert stored is not None
    assert (stored.revoked_at, stored.last_used_at) == (clock.now(), at)


async def test_lists_are_newest_first_per_user_or_for_everyone_in_pages(
    uow_factory: UnitOfWorkFactory, make: Make, ada: User
) -> None:
    bob = make.user("bob@example.com", role=Role.ADMIN)
    await store(uow_factory, bob)
    keys = [make.api_key(ada if n % 2 == 0 else bob, f"digest-{n}") for n in range(5)]
    await store(uow_factory, *keys)
    ada_keys = [k.id for k in reversed(keys) if k.user_id == ada.id]
    every_key = [k.id for k in reversed(keys)]

    async with uow_factory(readonly=True) as uow:
        first = await uow.api_keys.list(PageRequest(limit=2), ApiKeyFilter(user_id=ada.id))
        assert [k.id for k in first.items] == ada_keys[:2]
        assert first.next_after is not None
        second = await uow.api_keys.list(PageRequest(limit=2, after=first.next_after), ApiKeyFilter(user_id=ada.id))
        assert ([k.id for k in second.items], second.next_after) == (ada_keys[2:], None)

        everyone = await uow.api_keys.list(PageRequest(limit=3), ApiKeyFilter())
        assert [k.id for k in everyone.items] == every_key[:3]
        assert everyone.next_after is not None
        rest = await uow.api_keys.list(PageRequest(limit=3, after=everyone.next_after), ApiKeyFilter())
        assert ([k.id for k in rest.items], rest.next_after) == (every_key[3:], None)

        # A cursor continues only its own list.
        with pytest.raises(InvalidCursor):
            await uow.api_keys.list(PageRequest(limit=2, after=first.next_after), ApiKeyFilter(user_id=bob.id))
        with pytest.raises(InvalidCursor):
            await uow.api_keys.list(PageRequest(limit=2, after=first.next_after), ApiKeyFilter())
        none = await uow.api_keys.list(PageRequest(), ApiKeyFilter(user_id="usr_nobody"))
        assert (none.items, none.next_after) == ([], None)


async def test_a_key_left_without_commit_is_not_kept(uow_factory: UnitOfWorkFactory, make: Make, ada: User) -> None:
    key = make.api_key(ada, "digest-1")
    async with uow_factory() as uow:
        await uow.api_keys.add(key)
    assert await _by_digest(uow_factory, "digest-1") is None

"""RevokedSessions, UserRepository.count and the look-alike rule of add, and
RefreshTokenRepository.families_since: every adapter behaves the same."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import attrs
import pytest

from core.domain.errors import EmailTaken
from core.domain.users import Role, UserStatus
from core.ports.repositories import EndedSession, UserFilter
from core.ports.unit_of_work import UnitOfWorkFactory
from tests.contract.builders import Make, store
from tests.fakes import FixedClock


async def _all_changes(
    uow_factory: UnitOfWorkFactory, cursor: str | None, clock: FixedClock, limit: int = 2
) -> tuple[list[EndedSession], str]:
    """Every record from ``cursor`` on, a few per call, as the session guard reads them."""
    found: list[EndedSession] = []
    async with uow_factory(readonly=True) as uow:
        while True:
            changes = await uow.revoked_sessions.changes(cursor, clock.now(), limit)
            found += changes.ended
            cursor = changes.cursor
            if changes.complete:
                return found, cursor


async def _end(uow_factory: UnitOfWorkFactory, clock: FixedClock, *session_ids: str, lasts: int = 16) -> None:
    async with uow_factory() as uow:
        await uow.revoked_sessions.add(session_ids, clock.now(), clock.now() + timedelta(minutes=lasts))
        await uow.commit()


async def test_a_first_read_finds_the_live_records_and_a_cursor_finds_what_came_after(
    uow_factory: UnitOfWorkFactory, clock: FixedClock
) -> None:
    await _end(uow_factory, clock, "fam_old", lasts=1)
    await _end(uow_factory, clock, "fam_a", "fam_b", "fam_c")
    clock.advance(minutes=2)  # fam_old's record is no longer needed

    found, cursor = await _all_changes(uow_factory, None, clock)
    assert sorted(e.session_id for e in found) == ["fam_a", "fam_b", "fam_c"]
    assert {e.until for e in found} == {clock.now() + timedelta(minutes=14)}

    await _end(uow_factory, clock, "fam_d", "fam_e", "fam_f")
    later, cursor = await _all_changes(uow_factory, cursor, clock)
    assert [e.session_id for e in later] == ["fam_d", "fam_e", "fam_f"]
    assert (await _all_changes(uow_factory, cursor, clock))[0] == []  # nothing new


async def test_a_session_recorded_again_keeps_its_one_record(uow_factory: UnitOfWorkFactory, clock: FixedClock) -> None:
    await _end(uow_factory, clock, "fam_a")
    found, cursor = await _all_changes(uow_factory, None, clock)
    for _ in range(3):
        await _end(uow_factory, clock, "fam_a", lasts=30)
    assert [e.session_id for e in found] == ["fam_a"]
    assert (await _all_changes(uow_factory, cursor, clock))[0] == []
    assert [e.until for e in (await _all_changes(uow_factory, None, clock))[0]] == [clock.now() + timedelta(minutes=16)]


async def test_records_read_past_expired_ones_with_a_cursor(uow_factory: UnitOfWorkFactory, clock: FixedClock) -> None:
    _, cursor = await _all_changes(uow_factory, None, clock)
    await _end(uow_factory, clock, *(f"fam_{n}" for n in range(5)), lasts=1)
    await _end(uow_factory, clock, "fam_live")
    clock.advance(minutes=2)
    found, _ = await _all_changes(uow_factory, cursor, clock, limit=2)  # the expired fill whole calls
    assert [e.session_id for e in found] == ["fam_live"]


async def test_the_purge_forgets_what_is_no_longer_needed_a_batch_at_a_time(
    uow_factory: UnitOfWorkFactory, clock: FixedClock
) -> None:
    await _end(uow_factory, clock, *(f"fam_old_{n}" for n in range(5)), lasts=1)
    await _end(uow_factory, clock, "fam_live")
    clock.advance(minutes=2)
    purged = []
    while True:
        async with uow_factory() as uow:
            purged.append(await uow.revoked_sessions.purge(clock.now(), 2))
            await uow.commit()
        if purged[-1] < 2:
            break
    assert purged == [2, 2, 1]
    found, _ = await _all_changes(uow_factory, None, clock)
    assert [e.session_id for e in found] == ["fam_live"]


async def test_records_of_a_unit_left_without_commit_do_not_exist(
    uow_factory: UnitOfWorkFactory, clock: FixedClock
) -> None:
    async with uow_factory() as uow:
        await uow.revoked_sessions.add(["fam_a"], clock.now(), clock.now() + timedelta(minutes=16))
    assert (await _all_changes(uow_factory, None, clock))[0] == []


# Users.
async def test_an_address_that_looks_like_a_taken_one_is_taken(uow_factory: UnitOfWorkFactory, make: Make) -> None:
    ada = make.user("ada@example.com")
    await store(uow_factory, ada)
    lookalike = attrs.evolve(make.user("аda@example.com"), email_skeleton=ada.email_skeleton)

    async with uow_factory() as uow:
        with pytest.raises(EmailTaken):
            await uow.users.add(lookalike)
        await uow.commit()
    async with uow_factory(readonly=True) as uow:
        assert await uow.users.get(lookalike.id) is None


async def test_count_counts_what_matches(uow_factory: UnitOfWorkFactory, make: Make) -> None:
    await store(
        uow_factory,
        make.user("a1@example.com", role=Role.ADMIN),
        make.user("a2@example.com", role=Role.ADMIN, status=UserStatus.DISABLED),
        make.user("s1@example.com", role=Role.STAFF),
        make.user("c1@example.com"),
    )
    async with uow_factory(readonly=True) as uow:
        assert await uow.users.count(UserFilter()) == 4
        assert await uow.users.count(UserFilter(role=Role.ADMIN)) == 2
        assert await uow.users.count(UserFilter(role=Role.ADMIN, status=UserStatus.ACTIVE)) == 1
        assert await uow.users.count(UserFilter(status=UserStatus.DISABLED)) == 1
        assert await uow.users.count(UserFilter(email="s1@example.com")) == 1
        assert await uow.users.count(UserFilter(email="s1@example.com", role=Role.ADMIN)) == 0


async def test_a_count_in_a_write_unit_holds_until_it_commits(uow_factory: UnitOfWorkFactory, make: Make) -> None:
    # Two write units that each count active admins and then disable one: the second sees
    # the first's change (the store serializes them), so they never both act on a count of 2.
    first, second = make.user("a1@example.com", role=Role.ADMIN), make.user("a2@example.com", role=Role.ADMIN)
    await store(uow_factory, first, second)
    seen: list[int] = []

    async def disable(user_id: str) -> None:
        async with uow_factory() as uow:
            admins = await uow.users.count(UserFilter(role=Role.ADMIN, status=UserStatus.ACTIVE))
            seen.append(admins)
            await asyncio.sleep(0)  # let the other unit try to run in between
            if admins > 1:
                user = await uow.users.get(user_id)
                assert user is not None
                user.change_status(UserStatus.DISABLED, at=user.updated_at)
                await uow.users.update(user)
            await uow.commit()

    await asyncio.gather(disable(first.id), disable(second.id))
    assert seen == [2, 1]
    async with uow_factory(readonly=True) as uow:
        assert await uow.users.count(UserFilter(role=Role.ADMIN, status=UserStatus.ACTIVE)) == 1


async def test_families_since_are_those_with_a_token_made_since(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock
) -> None:
    ada, bob = make.user("ada@example.com"), make.user("bob@example.com")
    await store(uow_factory, ada, bob, make.refresh_token(ada, "fam_old", "d1"))
    clock.advance(minutes=30)
    since = clock.now()
    await store(
        uow_factory,
        make.refresh_token(ada, "fam_new", "d2"),
        make.refresh_token(ada, "fam_new", "d3"),
        make.refresh_token(bob, "fam_bob", "d4"),
    )
    async with uow_factory(readonly=True) as uow:
        assert await uow.refresh_tokens.families_since(ada.id, since) == ["fam_new"]
        assert await uow.refresh_tokens.families_since(ada.id, since - timedelta(hours=1)) == ["fam_new", "fam_old"]
        assert await uow.refresh_tokens.families_since("usr_nobody", since) == []

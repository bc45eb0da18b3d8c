"""RefreshTokenRepository: every adapter behaves the same (see core/ports/repositories.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.domain.users import RefreshToken, User
from core.ports.unit_of_work import UnitOfWorkFactory
from tests.contract.builders import START, Make, store
from tests.fakes import FixedClock


@pytest.fixture
async def ada(uow_factory: UnitOfWorkFactory, make: Make) -> User:
    user = make.user("ada@example.com")
    await store(uow_factory, user)
    return user


async def _by_digest(uow_factory: UnitOfWorkFactory, digest: str) -> RefreshToken | None:
    async with uow_factory(readonly=True) as uow:
        return await uow.refresh_tokens.get_by_digest(digest)


async def test_a_token_reads_back_exactly_by_its_digest(uow_factory: UnitOfWorkFactory, make: Make, ada: User) -> None:
    token = make.refresh_token(ada, "fam_1", "digest-1")
    await store(uow_factory, token)

    stored = await _by_digest(uow_factory, "digest-1")
    assert stored == RefreshToken(
        id=token.id,
        user_id=ada.id,
        family_id="fam_1",
        token_digest="digest-1",
        created_at=START,
        expires_at=START + timedelta(days=30),
        used_at=None,
        revoked_at=None,
    )
    assert await _by_digest(uow_factory, "digest-2") is None


async def test_a_token_is_marked_used_once(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock, ada: User
) -> None:
    token = make.refresh_token(ada, "fam_1", "digest-1")
    await store(uow_factory, token)
    used_at = clock.now() + timedelta(minutes=1)

    async with uow_factory() as uow:
        assert await uow.refresh_tokens.mark_used(token.id, used_at) is True
        assert await uow.refresh_tokens.mark_used(token.id, used_at + timedelta(seconds=1)) is False  # a replay
        assert await uow.refresh_tokens.mark_used("rtk_unknown", used_at) is False
        await uow.commit()

    stored = await _by_digest(uow_factory, "digest-1")
    assert stored is not None
    assert (stored.used_at, stored.revoked_at) == (used_at, None)


async def test_a_revoked_token_cannot_be_marked_used(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock, ada: User
) -> None:
    token = make.refresh_token(ada, "fam_1", "digest-1")
    await store(uow_factory, token)

    async with uow_factory() as uow:
        assert await uow.refresh_tokens.revoke_family("fam_1", clock.now()) == 1
        assert await uow.refresh_tokens.mark_used(token.id, clock.now()) is False
        await uow.commit()

    stored = await _by_digest(uow_factory, "digest-1")
    assert stored is not None
    assert (stored.used_at, stored.revoked_at) == (None, clock.now())


async def test_revoking_a_family_counts_and_touches_only_its_unrevoked_tokens(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock, ada: User
) -> None:
    first = make.refresh_token(ada, "fam_1", "d1")
    second = make.refresh_token(ada, "fam_1", "d2")
    third = make.refresh_token(ada, "fam_1", "d3")
    other_family = make.refresh_token(ada, "fam_2", "d4")
    await store(uow_factory, first, second, third, other_family)
    earlier = clock.now()

    async with uow_factory() as uow:
        assert await uow.refresh_tokens.mark_used(first.id, earlier) is True  # used, not revoked: still counts
        await uow.commit()
    async with uow_factory() as uow:
        assert await uow.refresh_tokens.revoke_family("fam_1", earlier) == 3
        await uow.commit()
    clock.advance(minutes=1)
    async with uow_factory() as uow:  # a second time, nothing is left to revoke or re-stamp
        assert await uow.refresh_tokens.revoke_family("fam_1", clock.now()) == 0
        assert await uow.refresh_tokens.revoke_family("fam_unknown", clock.now()) == 0
        await uow.commit()

    for digest in ("d1", "d2", "d3"):
        stored = await _by_digest(uow_factory, digest)
        assert stored is not None
        assert stored.revoked_at == earlier
    untouched = await _by_digest(uow_factory, "d4")
    assert untouched == other_family


async def test_revoking_a_user_counts_and_touches_only_their_unrevoked_tokens(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock, ada: User
) -> None:
    bob = make.user("bob@example.com")
    ada_1 = make.refresh_token(ada, "fam_1", "d1")
    ada_2 = make.refresh_token(ada, "fam_2", "d2")
    ada_3 = make.refresh_token(ada, "fam_3", "d3")
    bobs = make.refresh_token(bob, "fam_4", "d4")
    await store(uow_factory, bob, ada_1, ada_2, ada_3, bobs)
    earlier = clock.now()
    clock.advance(minutes=1)

    async with uow_factory() as uow:
        assert await uow.refresh_tokens.revoke_family("fam_3", earlier) == 1
        assert await uow.refresh_tokens.revoke_all_for_user(ada.id, clock.now()) == 2
        assert await uow.refresh_tokens.revoke_all_for_user(ada.id, clock.now()) == 0
        assert await uow.refresh_tokens.revoke_all_for_user("usr_unknown", clock.now()) == 0
        await uow.commit()

    revoked = {d: t.revoked_at for d in ("d1", "d2", "d3", "d4") if (t := await _by_digest(uow_factory, d))}
    assert revoked == {"d1": clock.now(), "d2": clock.now(), "d3": earlier, "d4": None}

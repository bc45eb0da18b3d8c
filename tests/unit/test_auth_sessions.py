"""Refresh-token rotation, reuse detection, logout and password changes."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from unittest.mock import ANY

import pytest

from core.domain.audit import AuditEntry
from core.domain.errors import InvalidCredentials, RefreshTokenReused, TokenInvalid, UserNotFound, ValidationFailed
from core.domain.users import Actor, RefreshToken, Role, User, UserStatus
from core.services.auth import (
    AuthService,
    ChangePassword,
    CreateUser,
    LogIn,
    LogOut,
    RefreshSession,
    RegisterUser,
    TokenPair,
    UpdateUser,
)
from tests.fakes import FakeAccessTokens, FakeOpaqueTokens, FakePasswordHasher, FixedClock, InMemoryDatabase
from tests.unit.helpers import OTHER_STRONG, START, STRONG, audit, tokens


@pytest.fixture
async def alice(auth: AuthService) -> User:
    return await auth.register(RegisterUser(email="alice@example.com", password=STRONG))


async def _login(auth: AuthService, email: str = "alice@example.com", password: str = STRONG) -> TokenPair:
    return await auth.login(LogIn(email=email, password=password, source_ip="198.51.100.9"))


def _record(db: InMemoryDatabase, opaque: FakeOpaqueTokens, token: str) -> RefreshToken:
    digest = opaque.digest(token)
    return next(t for t in db.store.refresh_tokens.values() if t.token_digest == digest)


async def _invalid(auth: AuthService, token: str) -> TokenInvalid:
    with pytest.raises(TokenInvalid) as caught:
        await auth.refresh(RefreshSession(refresh_token=token))
    assert caught.value.code == "invalid_token"
    return caught.value


# Rotation.
async def test_refresh_rotates_within_the_family_and_keeps_the_absolute_expiry(
    auth: AuthService,
    db: InMemoryDatabase,
    opaque: FakeOpaqueTokens,
    clock: FixedClock,
    access_tokens: FakeAccessTokens,
    alice: User,
) -> None:
    first = await _login(auth)
    clock.advance(days=10)

    second = await auth.refresh(RefreshSession(refresh_token=first.refresh_token))

    assert second.refresh_token != first.refresh_token
    assert access_tokens.verify(second.access_token).user_id == alice.id
    old, new = _record(db, opaque, first.refresh_token), _record(db, opaque, second.refresh_token)
    assert old.used_at == START + timedelta(days=10)
    assert old.revoked_at is None
    assert (new.family_id, new.user_id) == (old.family_id, alice.id)
    assert new.created_at == START + timedelta(days=10)
    assert new.expires_at == old.expires_at == START + timedelta(days=30)
    assert (new.used_at, new.revoked_at) == (None, None)
    assert second.refresh_token not in repr(db.store)


async def test_a_chain_of_refreshes_each_token_single_use(auth: AuthService, db: InMemoryDatabase, alice: User) -> None:
    pair = await _login(auth)
    for _ in range(3):
        pair = await auth.refresh(RefreshSession(refresh_token=pair.refresh_token))

    assert len(tokens(db)) == 4
    assert len({t.family_id for t in tokens(db)}) == 1
    assert [t.used_at is None for t in tokens(db)] == [False, False, False, True]


async def test_refresh_issues_an_access_token_with_the_current_role(
    auth: AuthService, access_tokens: FakeAccessTokens, alice: User
) -> None:
    pair = await _login(auth)
    await auth.update_user(UpdateUser(actor=Actor.operator(), user_id=alice.id, role=Role.STAFF))

    refreshed = await auth.refresh(RefreshSession(refresh_token=pair.refresh_token))

    assert access_tokens.verify(refreshed.access_token).role is Role.STAFF


async def test_replaying_a_used_token_revokes_the_whole_family(
    auth: AuthService, db: InMemoryDatabase, opaque: FakeOpaqueTokens, clock: FixedClock, alice: User
) -> None:
    first = await _login(auth)
    second = await auth.refresh(RefreshSession(refresh_token=first.refresh_token))
    clock.advance(minutes=5)

    with pytest.raises(RefreshTokenReused) as caught:
        await auth.refresh(RefreshSession(refresh_token=first.refresh_token, source_ip="192.0.2.99"))

    assert caught.value.code == "refresh_token_reused"
    family = _record(db, opaque, first.refresh_token).family_id
    assert {(t.family_id, t.revoked_at) for t in tokens(db)} == {(family, START + timedelta(minutes=5))}
    assert audit(db)[-1] == AuditEntry(
        id=ANY,
        at=START + timedelta(minutes=5),
        actor_id=alice.id,
        action="auth.refresh_token_reused",
        object_type="user",
        object_id=alice.id,
        source_ip="192.0.2.99",
        details={"family_id": family},
    )
    # The newest token of the family, which the legitimate client (or the thief) holds, is dead too.
    await _invalid(auth, second.refresh_token)


async def test_reuse_leaves_other_families_of_the_user_alone(
    auth: AuthService, db: InMemoryDatabase, opaque: FakeOpaqueTokens, alice: User
) -> None:
    laptop = await _login(auth)
    phone = await _login(auth)
    await auth.refresh(RefreshSession(refresh_token=laptop.refresh_token))

    with pytest.raises(RefreshTokenReused):
        await auth.refresh(RefreshSession(refresh_token=laptop.refresh_token))

    assert _record(db, opaque, phone.refresh_token).revoked_at is None
    rotated = await auth.refresh(RefreshSession(refresh_token=phone.refresh_token))
    assert rotated.refresh_token


async def test_unknown_token_is_invalid(auth: AuthService, db: InMemoryDatabase) -> None:
    await _invalid(auth, "never-issued")
    assert db.store.audit == {}


async def test_expired_token_is_refused(
    auth: AuthService, db: InMemoryDatabase, opaque: FakeOpaqueTokens, clock: FixedClock, alice: User
) -> None:
    pair = await _login(auth)
    clock.advance(days=30, microseconds=-1)
    almost = await auth.refresh(RefreshSession(refresh_token=pair.refresh_token))
    clock.advance(microseconds=1)  # exactly the absolute expiry of the family

    await _invalid(auth, almost.refresh_token)

    assert _record(db, opaque, almost.refresh_token).used_at is None


async def test_disabling_a_user_revokes_and_refuses_their_tokens(
    auth: AuthService, db: InMemoryDatabase, alice: User
) -> None:
    pair = await _login(auth)
    await auth.update_user(UpdateUser(actor=Actor.operator(), user_id=alice.id, status=UserStatus.DISABLED))

    await _invalid(auth, pair.refresh_token)


async def test_a_token_of_a_disabled_user_is_refused_even_if_not_revoked(
    auth: AuthService, db: InMemoryDatabase, opaque: FakeOpaqueTokens, alice: User
) -> None:
    pair = await _login(auth)
    db.store.users[alice.id].status = UserStatus.DISABLED  # e.g. disabled by another path

    await _invalid(auth, pair.refresh_token)

    record = _record(db, opaque, pair.refresh_token)
    assert (record.used_at, record.revoked_at) == (None, None)
    assert len(tokens(db)) == 1


# Logout.
async def test_logout_revokes_the_family(
    auth: AuthService, db: InMemoryDatabase, opaque: FakeOpaqueTokens, clock: FixedClock, alice: User
) -> None:
    first = await _login(auth)
    other = await _login(auth)
    second = await auth.refresh(RefreshSession(refresh_token=first.refresh_token))
    clock.advance(minutes=1)

    await auth.logout(LogOut(refresh_token=second.refresh_token))

    family = _record(db, opaque, first.refresh_token).family_id
    assert {t.revoked_at for t in tokens(db) if t.family_id == family} == {START + timedelta(minutes=1)}
    await _invalid(auth, second.refresh_token)
    # Another session of the same user goes on.
    assert _record(db, opaque, other.refresh_token).revoked_at is None
    assert (await auth.refresh(RefreshSession(refresh_token=other.refresh_token))).refresh_token


async def test_logout_with_an_unknown_token_is_a_no_op(auth: AuthService, db: InMemoryDatabase, alice: User) -> None:
    await _login(auth)
    before = repr(db.store)

    await auth.logout(LogOut(refresh_token="never-issued"))

    assert repr(db.store) == before


async def test_logging_out_twice_is_not_an_error(auth: AuthService, db: InMemoryDatabase, alice: User) -> None:
    pair = await _login(auth)
    await auth.logout(LogOut(refresh_token=pair.refresh_token))
    revoked_at = tokens(db)[0].revoked_at

    await auth.logout(LogOut(refresh_token=pair.refresh_token))

    assert tokens(db)[0].revoked_at == revoked_at == START


# Password changes.
async def test_change_password(
    auth: AuthService, db: InMemoryDatabase, hasher: FakePasswordHasher, clock: FixedClock, alice: User
) -> None:
    laptop = await _login(auth)
    phone = await _login(auth)
    clock.advance(hours=1)
    actor = Actor(user_id=alice.id, role=Role.CUSTOMER, source_ip="198.51.100.9")

    await auth.change_password(ChangePassword(actor=actor, current_password=STRONG, new_password=OTHER_STRONG))

    stored = db.store.users[alice.id]
    assert stored.password_hash == await hasher.hash(OTHER_STRONG)
    assert stored.updated_at == START + timedelta(hours=1)
    assert {t.revoked_at for t in tokens(db)} == {START + timedelta(hours=1)}
    await _invalid(auth, laptop.refresh_token)
    await _invalid(auth, phone.refresh_token)
    with pytest.raises(InvalidCredentials):
        await _login(auth, password=STRONG)
    assert (await _login(auth, password=OTHER_STRONG)).refresh_token
    assert [e for e in audit(db) if e.action == "user.password_changed"] == [
        AuditEntry(
            id=ANY,
            at=START + timedelta(hours=1),
            actor_id=alice.id,
            action="user.password_changed",
            object_type="user",
            object_id=alice.id,
            source_ip="198.51.100.9",
            details={},
        )
    ]


async def test_change_password_needs_the_current_password(auth: AuthService, db: InMemoryDatabase, alice: User) -> None:
    await _login(auth)
    before_audit = dict(db.store.audit)

    with pytest.raises(InvalidCredentials) as caught:
        await auth.change_password(
            ChangePassword(
                actor=Actor(user_id=alice.id, role=Role.CUSTOMER),
                current_password="not-the-password",
                new_password=OTHER_STRONG,
            )
        )

    assert caught.value.code == "invalid_credentials"
    assert db.store.users[alice.id].password_hash == await FakePasswordHasher().hash(STRONG)
    assert all(t.revoked_at is None for t in db.store.refresh_tokens.values())
    # The failed attempt is audited (and counted by the login throttle), nothing else changes.
    assert audit(db)[-1] == AuditEntry(
        id=ANY,
        at=START,
        actor_id=alice.id,
        action="user.password_change_failed",
        object_type="user",
        object_id=alice.id,
        source_ip=None,
        details={},
    )
    assert len(db.store.audit) == len(before_audit) + 1


@pytest.mark.parametrize("new_password", ["short", "password1234", "alice@example.com", "Alice@Example.com"])
async def test_change_password_applies_the_policy(
    auth: AuthService, db: InMemoryDatabase, alice: User, new_password: str
) -> None:
    await _login(auth)
    before = repr(db.store)

    with pytest.raises(ValidationFailed) as caught:
        await auth.change_password(
            ChangePassword(
                actor=Actor(user_id=alice.id, role=Role.CUSTOMER), current_password=STRONG, new_password=new_password
            )
        )

    assert caught.value.code == "validation_failed"
    assert list(caught.value.details["fields"]) == ["new_password"]  # the field of the request
    assert repr(db.store) == before


async def test_change_password_of_the_operator_or_an_unknown_user(auth: AuthService) -> None:
    with pytest.raises(UserNotFound):
        await auth.change_password(
            ChangePassword(actor=Actor.operator(), current_password=STRONG, new_password=OTHER_STRONG)
        )
    with pytest.raises(TokenInvalid):
        await auth.change_password(
            ChangePassword(
                actor=Actor(user_id="usr_gone", role=Role.CUSTOMER), current_password=STRONG, new_password=OTHER_STRONG
            )
        )


async def test_a_login_whose_check_straddles_a_password_change_gets_no_session(
    auth: AuthService, hasher: FakePasswordHasher
) -> None:
    old, new = "old password that is long", "new password that is long"
    user = await auth.create_user(CreateUser(actor=Actor.operator(), email="v@example.com", password=old))
    owner = Actor(user_id=user.id, role=Role.CUSTOMER, source_ip="192.0.2.7")
    checking, release = asyncio.Event(), asyncio.Event()
    real_verify = hasher.verify

    async def slow_verify(password_hash: str, password: str) -> bool:  # argon2 runs off the loop, for ms
        ok = await real_verify(password_hash, password)
        if password == old and not checking.is_set():
            checking.set()
            await release.wait()
        return ok

    hasher.verify = slow_verify  # type: ignore[method-assign]
    stale_login = asyncio.create_task(auth.login(LogIn(email="v@example.com", password=old)))
    await checking.wait()
    hasher.verify = real_verify  # type: ignore[method-assign]
    await auth.change_password(ChangePassword(actor=owner, current_password=old, new_password=new))
    release.set()

    with pytest.raises(InvalidCredentials):
        await stale_login

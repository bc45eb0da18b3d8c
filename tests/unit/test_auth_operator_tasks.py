"""Operator tasks of the auth service: finding an account by its email, and password resets."""

from __future__ import annotations

from datetime import timedelta

import pytest

from adapters.auth.skeletons import Uts39Skeletons
from core.domain.audit import AuditEntry
from core.domain.errors import (
    Invalid,
    InvalidCredentials,
    NotAllowed,
    NotFound,
    SessionEnded,
    TokenInvalid,
    UserNotFound,
)
from core.domain.users import Actor, Role, User, UserStatus
from core.services.auth import (
    AuthService,
    AuthSettings,
    CreateUser,
    LogIn,
    RefreshSession,
    ResetPassword,
    UpdateUser,
)
from tests.fakes import (
    FakeAccessTokens,
    FakeOpaqueTokens,
    FakePasswordHasher,
    FixedClock,
    InMemoryDatabase,
    InMemoryThrottle,
    SequentialIds,
)
from tests.unit.helpers import OTHER_STRONG, START, STRONG, audit, stored_actor, tokens

OPERATOR = Actor.operator()
NEW = "amber-orchard-telescope"


@pytest.fixture
async def admin(auth: AuthService) -> User:
    return await auth.create_user(
        CreateUser(actor=OPERATOR, email="root@example.com", password=STRONG, role=Role.ADMIN)
    )


@pytest.fixture
def as_admin(admin: User) -> Actor:
    return Actor(user_id=admin.id, role=Role.ADMIN, source_ip="10.0.0.3")


@pytest.fixture
async def carol(auth: AuthService) -> User:
    return await auth.create_user(CreateUser(actor=OPERATOR, email="carol@example.com", password=STRONG))


def _snapshot(db: InMemoryDatabase) -> tuple[object, ...]:
    store = db.store
    return (dict(store.users), dict(store.refresh_tokens), dict(store.audit), db.commits)


# Finding an account by its email.
@pytest.mark.parametrize("typed", ["carol@example.com", "Carol@Example.COM", "  carol@example.com\t"])
async def test_get_user_by_email_normalizes_as_login_does(
    auth: AuthService, carol: User, as_admin: Actor, typed: str
) -> None:
    assert await auth.get_user_by_email(as_admin, typed) == carol
    assert await auth.get_user_by_email(OPERATOR, typed) == carol


async def test_an_unknown_email_is_not_found_and_named(auth: AuthService, carol: User) -> None:
    with pytest.raises(NotFound) as caught:
        await auth.get_user_by_email(OPERATOR, " Nobody@Example.com ")

    error = caught.value
    assert (error.code, error.message, error.details) == (
        "user_not_found",
        "No user with email 'nobody@example.com'.",
        {"email": "nobody@example.com"},
    )
    assert "id" not in error.message


async def test_a_malformed_email_is_invalid_not_missing(auth: AuthService, carol: User) -> None:
    with pytest.raises(Invalid) as caught:
        await auth.get_user_by_email(OPERATOR, "carol at example.com")
    assert (caught.value.code, caught.value.details) == (
        "validation_failed",
        {"fields": {"email": "is not a valid email address"}},
    )


@pytest.mark.parametrize("role", [Role.CUSTOMER, Role.STAFF])
async def test_only_admins_find_accounts_by_email(
    auth: AuthService, db: InMemoryDatabase, carol: User, role: Role
) -> None:
    with pytest.raises(NotAllowed) as caught:
        await auth.get_user_by_email(stored_actor(db, "usr_x", role, "10.0.0.8"), carol.email)
    assert caught.value.code == "forbidden"


# Password resets.
async def test_the_operator_resets_a_password_ending_every_session(
    auth: AuthService, db: InMemoryDatabase, clock: FixedClock, carol: User
) -> None:
    pairs = [await auth.login(LogIn(email=carol.email, password=STRONG)) for _ in range(2)]
    clock.advance(minutes=5)
    at = START + timedelta(minutes=5)

    updated = await auth.reset_password(ResetPassword(actor=OPERATOR, user_id=carol.id, new_password=NEW))

    assert (updated.id, updated.updated_at) == (carol.id, at)
    assert db.store.users[carol.id] == updated
    assert db.store.users[carol.id].password_hash == await FakePasswordHasher().hash(NEW)
    assert {t.revoked_at for t in tokens(db)} == {at}
    for pair in pairs:
        with pytest.raises(TokenInvalid):
            await auth.refresh(RefreshSession(refresh_token=pair.refresh_token))
        with pytest.raises(SessionEnded):  # its access token too, at once
            await auth.authenticate(pair.access_token, None)
    with pytest.raises(InvalidCredentials):
        await auth.login(LogIn(email=carol.email, password=STRONG))
    assert (await auth.login(LogIn(email=carol.email, password=NEW))).refresh_token
    reset = [e for e in audit(db) if e.action == "user.password_reset"]
    assert reset == [
        AuditEntry(
            id=reset[0].id,
            at=at,
            actor_id=None,
            action="user.password_reset",
            object_type="user",
            object_id=carol.id,
            source_ip="cli",
            details={},
        )
    ]


async def test_an_admin_reset_is_audited_with_the_admin_and_never_the_email(
    auth: AuthService, db: InMemoryDatabase, carol: User, as_admin: Actor
) -> None:
    await auth.reset_password(ResetPassword(actor=as_admin, user_id=carol.id, new_password=NEW))

    entry = audit(db)[-1]
    assert (entry.action, entry.actor_id, entry.object_id, entry.source_ip) == (
        "user.password_reset",
        as_admin.user_id,
        carol.id,
        "10.0.0.3",
    )
    assert "carol" not in repr(entry)
    assert NEW not in repr(entry)


async def test_the_new_password_is_normalized_like_any_other(
    auth: AuthService, db: InMemoryDatabase, carol: User
) -> None:
    await auth.reset_password(
        ResetPassword(actor=OPERATOR, user_id=carol.id, new_password="ａｍｂｅｒ-orchard-telescope")
    )

    assert (await auth.login(LogIn(email=carol.email, password=NEW))).access_token


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short pass", "at least 12"),
        ("x" * 129, "at most 128"),
        ("password1234", "too common"),
        ("carol@example.com", "email address"),
        ("aaaaaaaaaaaaaaaa", "too common"),
        ("\ud800 lone surrogate here", "not valid text"),
    ],
)
async def test_a_weak_password_is_refused_like_at_registration_and_changes_nothing(
    auth: AuthService, db: InMemoryDatabase, carol: User, password: str, message: str
) -> None:
    await auth.login(LogIn(email=carol.email, password=STRONG))
    before = _snapshot(db)

    with pytest.raises(Invalid) as caught:
        await auth.reset_password(ResetPassword(actor=OPERATOR, user_id=carol.id, new_password=password))

    assert (caught.value.code, list(caught.value.details["fields"])) == ("validation_failed", ["password"])
    assert message in caught.value.details["fields"]["password"]
    assert _snapshot(db) == before
    assert all(t.revoked_at is None for t in tokens(db))


@pytest.mark.parametrize("role", [Role.CUSTOMER, Role.STAFF])
async def test_only_admins_reset_passwords(auth: AuthService, db: InMemoryDatabase, carol: User, role: Role) -> None:
    actor = stored_actor(db, "usr_x", role, "10.0.0.8")
    before = _snapshot(db)

    with pytest.raises(NotAllowed) as caught:
        await auth.reset_password(ResetPassword(actor=actor, user_id=carol.id, new_password=NEW))

    assert caught.value.code == "forbidden"
    assert _snapshot(db) == before


async def test_an_unknown_account_is_not_found(auth: AuthService, db: InMemoryDatabase, carol: User) -> None:
    before = _snapshot(db)

    with pytest.raises(UserNotFound) as caught:
        await auth.reset_password(ResetPassword(actor=OPERATOR, user_id="usr_missing", new_password=NEW))

    assert caught.value.details == {"user_id": "usr_missing"}
    assert _snapshot(db) == before


async def test_an_admin_does_not_reset_their_own_password(
    auth: AuthService, db: InMemoryDatabase, admin: User, as_admin: Actor
) -> None:
    before = _snapshot(db)

    with pytest.raises(NotAllowed) as caught:
        await auth.reset_password(ResetPassword(actor=as_admin, user_id=admin.id, new_password=NEW))

    assert caught.value.code == "cannot_reset_own_password"
    assert _snapshot(db) == before


@pytest.mark.parametrize("change", [{"role": Role.STAFF}, {"status": UserStatus.DISABLED}])
async def test_an_admin_demoted_or_disabled_meanwhile_resets_nothing(
    auth: AuthService, db: InMemoryDatabase, carol: User, as_admin: Actor, change: dict[str, object]
) -> None:
    # The actor still says admin (a token issued before); the store no longer does.
    await auth.create_user(CreateUser(actor=OPERATOR, email="root2@example.com", password=STRONG, role=Role.ADMIN))
    await auth.update_user(UpdateUser(actor=OPERATOR, user_id=str(as_admin.user_id), **change))  # type: ignore[arg-type]
    before = _snapshot(db)

    with pytest.raises((NotAllowed, TokenInvalid)):
        await auth.reset_password(ResetPassword(actor=as_admin, user_id=carol.id, new_password=NEW))

    assert _snapshot(db) == before


async def test_a_disabled_account_gets_its_new_password_and_stays_disabled(
    auth: AuthService, db: InMemoryDatabase, carol: User
) -> None:
    await auth.update_user(UpdateUser(actor=OPERATOR, user_id=carol.id, status=UserStatus.DISABLED))

    updated = await auth.reset_password(ResetPassword(actor=OPERATOR, user_id=carol.id, new_password=OTHER_STRONG))

    assert updated.status is UserStatus.DISABLED
    assert db.store.users[carol.id].password_hash == await FakePasswordHasher().hash(OTHER_STRONG)


async def test_the_hash_is_computed_outside_the_transaction(
    db: InMemoryDatabase, clock: FixedClock, ids: SequentialIds
) -> None:
    held: list[bool] = []

    class WatchingHasher(FakePasswordHasher):
        async def hash(self, password: str) -> str:
            held.append(db.write_lock.locked())
            return await super().hash(password)

    hasher = WatchingHasher()
    auth = AuthService(
        db,
        hasher,
        FakeAccessTokens(clock),
        FakeOpaqueTokens(),
        InMemoryThrottle(clock),
        Uts39Skeletons(),
        clock,
        ids,
        AuthSettings(),
    )
    user = await auth.create_user(CreateUser(actor=OPERATOR, email="dave@example.com", password=STRONG))
    held.clear()

    await auth.reset_password(ResetPassword(actor=OPERATOR, user_id=user.id, new_password=NEW))

    assert held == [False]

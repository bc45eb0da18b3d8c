"""What a hostile caller tries against accounts and sessions, through the services.

Each test sends the hostile input and checks the error and that nothing changed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

import pytest

from adapters.auth.skeletons import Uts39Skeletons
from core.domain.errors import (
    EmailTaken,
    Invalid,
    InvalidCredentials,
    LastAdmin,
    LoginThrottled,
    NotAllowed,
    PasswordHashingBusy,
    QueryTimedOut,
    RefreshTokenReused,
    RegistrationThrottled,
    SessionEnded,
)
from core.domain.users import Actor, Role, User, UserStatus
from core.services.auth import (
    AuthService,
    AuthSettings,
    ChangePassword,
    CreateUser,
    LogIn,
    LogOut,
    RefreshSession,
    RegisterUser,
    UpdateUser,
    address_key,
)
from tests.fakes import (
    FakeAccessTokens,
    FakeOpaqueTokens,
    FakePasswordHasher,
    FixedClock,
    InMemoryDatabase,
    InMemoryRevokedSessions,
    InMemoryThrottle,
    SequentialIds,
)
from tests.unit.helpers import OTHER_STRONG, STRONG, users

IP = "198.51.100.9"
OPERATOR = Actor.operator()


class SlowHasher(FakePasswordHasher):
    """Counts the checks that start, and lets none finish until released: concurrent
    requests are all in flight together, as they are behind a real argon2 pool."""

    def __init__(self) -> None:
        self.started = 0
        self.release = asyncio.Event()

    async def verify(self, password_hash: str, password: str) -> bool:
        self.started += 1
        await self.release.wait()
        return await super().verify(password_hash, password)


async def _until(condition: Callable[[], bool], rounds: int = 10_000) -> None:
    """Let the other tasks run until the condition holds (no clock: the fakes never wait)."""
    for _ in range(rounds):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


@pytest.fixture
async def alice(auth: AuthService) -> User:
    return await auth.register(RegisterUser(email="alice@example.com", password=STRONG))


def _service(db: InMemoryDatabase, clock: FixedClock, hasher: FakePasswordHasher, **settings: object) -> AuthService:
    return AuthService(
        db,
        hasher,
        FakeAccessTokens(clock),
        FakeOpaqueTokens(),
        InMemoryThrottle(clock),
        Uts39Skeletons(),
        clock,
        SequentialIds(),
        AuthSettings(**settings),  # type: ignore[arg-type]
    )


# Throttles take their place before the password is checked.
async def test_sixty_concurrent_guesses_reach_the_password_check_five_times(
    db: InMemoryDatabase, clock: FixedClock
) -> None:
    hasher = SlowHasher()
    hasher.release.set()
    auth = _service(db, clock, hasher)
    await auth.register(RegisterUser(email="alice@example.com", password=STRONG))
    hasher.release.clear()
    hasher.started = 0

    attempts = [auth.login(LogIn("alice@example.com", f"guess number {n}", IP)) for n in range(59)]
    attempts.append(auth.login(LogIn("alice@example.com", STRONG, IP)))
    running = [asyncio.ensure_future(a) for a in attempts]
    await _until(lambda: sum(t.done() for t in running) == 55)
    hasher.release.set()
    outcomes = await asyncio.gather(*running, return_exceptions=True)

    throttled = [o for o in outcomes if isinstance(o, LoginThrottled)]
    checked = [o for o in outcomes if not isinstance(o, LoginThrottled)]
    assert hasher.started == 5
    assert len(checked) == 5 and len(throttled) == 55
    assert all(isinstance(o, InvalidCredentials) for o in checked)  # the right password came too late
    assert all(t.retry_after == 900 for t in throttled)


async def test_concurrent_password_change_guesses_are_bounded_alike(db: InMemoryDatabase, clock: FixedClock) -> None:
    hasher = SlowHasher()
    hasher.release.set()
    auth = _service(db, clock, hasher)
    user = await auth.register(RegisterUser(email="alice@example.com", password=STRONG))
    thief = Actor(user_id=user.id, role=Role.CUSTOMER, source_ip=IP)
    hasher.release.clear()
    hasher.started = 0
    before = db.store.users[user.id].password_hash

    running = [
        asyncio.ensure_future(auth.change_password(ChangePassword(thief, f"guess {n}", OTHER_STRONG)))
        for n in range(40)
    ]
    await _until(lambda: sum(t.done() for t in running) == 35)
    hasher.release.set()
    outcomes = await asyncio.gather(*running, return_exceptions=True)

    assert hasher.started == 5
    assert sum(isinstance(o, LoginThrottled) for o in outcomes) == 35
    assert sum(isinstance(o, InvalidCredentials) for o in outcomes) == 5
    assert db.store.users[user.id].password_hash == before


async def test_a_successful_sign_in_gives_its_place_back(auth: AuthService, alice: User) -> None:
    # 25 good sign-ins from one address within the window: none of them counts against it.
    for _ in range(25):
        await auth.login(LogIn("alice@example.com", STRONG, IP))
    for _ in range(4):
        with pytest.raises(InvalidCredentials):
            await auth.login(LogIn("alice@example.com", "wrong wrong wrong", IP))
    await auth.login(LogIn("alice@example.com", STRONG, IP))


# Registrations.
async def test_registrations_are_throttled_per_address(auth: AuthService, db: InMemoryDatabase) -> None:
    for n in range(10):
        await auth.register(RegisterUser(f"user{n}@example.com", STRONG, IP))
    before = repr(db.store)

    with pytest.raises(RegistrationThrottled) as caught:
        await auth.register(RegisterUser("one-more@example.com", STRONG, IP))

    assert (caught.value.code, caught.value.retry_after) == ("too_many_registrations", 3600)
    assert caught.value.details == {"retry_after": 3600}
    assert repr(db.store) == before
    await auth.register(RegisterUser("elsewhere@example.com", STRONG, "203.0.113.50"))  # another address


async def test_a_taken_email_costs_a_registration_too(auth: AuthService, alice: User) -> None:
    for _ in range(10):
        with pytest.raises(EmailTaken):
            await auth.register(RegisterUser("alice@example.com", STRONG, IP))
    with pytest.raises(RegistrationThrottled):
        await auth.register(RegisterUser("new@example.com", STRONG, IP))


async def test_a_weak_password_is_refused_before_it_costs_anything(auth: AuthService) -> None:
    for _ in range(20):
        with pytest.raises(Invalid):
            await auth.register(RegisterUser("bob@example.com", "password1234", IP))
    await auth.register(RegisterUser("bob@example.com", STRONG, IP))


# Ended sessions.
async def test_logout_ends_the_access_token_at_once(auth: AuthService, alice: User) -> None:
    pair = await auth.login(LogIn("alice@example.com", STRONG, IP))
    actor = await auth.authenticate(pair.access_token, IP)
    assert actor.user_id == alice.id and actor.session_id is not None

    await auth.logout(LogOut(pair.refresh_token))

    with pytest.raises(SessionEnded) as caught:
        await auth.authenticate(pair.access_token, IP)
    assert caught.value.code == "session_ended"


async def test_a_password_change_ends_every_session_but_later_ones_work(auth: AuthService, alice: User) -> None:
    phone = await auth.login(LogIn("alice@example.com", STRONG, IP))
    laptop = await auth.login(LogIn("alice@example.com", STRONG, IP))
    me = await auth.authenticate(laptop.access_token, IP)

    await auth.change_password(ChangePassword(me, STRONG, OTHER_STRONG))

    for pair in (phone, laptop):
        with pytest.raises(SessionEnded):
            await auth.authenticate(pair.access_token, IP)
    fresh = await auth.login(LogIn("alice@example.com", OTHER_STRONG, IP))
    assert (await auth.authenticate(fresh.access_token, IP)).user_id == alice.id


async def test_disabling_ends_the_sessions_a_replay_ends_its_own(auth: AuthService, alice: User) -> None:
    await auth.register(RegisterUser("bob@example.com", STRONG))
    alices = await auth.login(LogIn("alice@example.com", STRONG, IP))
    bobs = await auth.login(LogIn("bob@example.com", STRONG, IP))

    await auth.update_user(UpdateUser(OPERATOR, alice.id, status=UserStatus.DISABLED))
    with pytest.raises(SessionEnded):
        await auth.authenticate(alices.access_token, IP)

    rotated = await auth.refresh(RefreshSession(bobs.refresh_token))
    with pytest.raises(RefreshTokenReused):
        await auth.refresh(RefreshSession(bobs.refresh_token))  # the replay
    for token in (bobs.access_token, rotated.access_token):
        with pytest.raises(SessionEnded):
            await auth.authenticate(token, IP)


async def test_another_process_refuses_an_ended_session_once_its_interval_passed(
    db: InMemoryDatabase, clock: FixedClock
) -> None:
    here = _service(db, clock, FakePasswordHasher())
    await here.register(RegisterUser("alice@example.com", STRONG))
    pair = await here.login(LogIn("alice@example.com", STRONG, IP))
    there = AuthService(
        db,
        FakePasswordHasher(),
        here._access_tokens,  # the same signing keys: another server process
        FakeOpaqueTokens(),
        InMemoryThrottle(clock),
        Uts39Skeletons(),
        clock,
        SequentialIds(),
        AuthSettings(),
    )
    assert (await there.authenticate(pair.access_token, IP)).session_id is not None

    await here.logout(LogOut(pair.refresh_token))

    clock.advance(milliseconds=100)  # the poll interval
    with pytest.raises(SessionEnded):
        await there.authenticate(pair.access_token, IP)


async def test_ended_sessions_are_forgotten_once_their_tokens_have_expired(
    auth: AuthService, db: InMemoryDatabase, alice: User, clock: FixedClock
) -> None:
    pair = await auth.login(LogIn("alice@example.com", STRONG, IP))
    await auth.logout(LogOut(pair.refresh_token))
    (record,) = db.store.revoked_sessions
    assert record[2] == clock.now() + timedelta(minutes=16)  # 15-minute tokens and a minute's leeway


# Admins.
async def _admins(auth: AuthService, n: int) -> list[Actor]:
    made = [await auth.create_user(CreateUser(OPERATOR, f"admin{i}@example.com", STRONG, Role.ADMIN)) for i in range(n)]
    return [Actor(user_id=u.id, role=Role.ADMIN, source_ip=IP) for u in made]


@pytest.mark.parametrize("change", [{"role": Role.STAFF}, {"status": UserStatus.DISABLED}])
async def test_the_last_active_admin_is_never_demoted_or_disabled(
    auth: AuthService, db: InMemoryDatabase, change: dict[str, object]
) -> None:
    (only,) = await _admins(auth, 1)
    before = repr(db.store)
    assert only.user_id is not None

    with pytest.raises(LastAdmin) as caught:
        await auth.update_user(UpdateUser(OPERATOR, only.user_id, **change))  # type: ignore[arg-type]

    assert caught.value.code == "last_admin"
    assert repr(db.store) == before


async def test_two_admins_demoting_each_other_at_once_leave_one_admin(auth: AuthService, db: InMemoryDatabase) -> None:
    first, second = await _admins(auth, 2)
    assert first.user_id is not None and second.user_id is not None

    outcomes = await asyncio.gather(
        auth.update_user(UpdateUser(first, second.user_id, role=Role.STAFF)),
        auth.update_user(UpdateUser(second, first.user_id, role=Role.STAFF)),
        return_exceptions=True,
    )

    assert sum(isinstance(o, User) for o in outcomes) == 1
    assert sum(isinstance(o, NotAllowed) for o in outcomes) == 1  # the loser was no longer an admin
    admins = [u for u in users(db) if u.role is Role.ADMIN and u.status is UserStatus.ACTIVE]
    assert len(admins) == 1


async def test_three_admins_disabling_each_other_at_once_leave_one(auth: AuthService, db: InMemoryDatabase) -> None:
    admins = await _admins(auth, 3)
    ids = [a.user_id for a in admins]
    await asyncio.gather(
        *(
            auth.update_user(UpdateUser(actor, target, status=UserStatus.DISABLED))
            for actor in admins
            for target in ids
            if target != actor.user_id and target is not None
        ),
        return_exceptions=True,
    )
    left = [u for u in users(db) if u.role is Role.ADMIN and u.status is UserStatus.ACTIVE]
    assert len(left) == 1


# Look-alike emails.
@pytest.mark.parametrize(
    "lookalike",
    [
        "ｋate@example.com",  # fullwidth k: the same address once NFKC-normalized
        "kаte@example.com",  # Cyrillic а
        "kate@exаmple.com",  # Cyrillic а in the domain
        "KATE@EXAMPLE.COM",
        "ｋａｔｅ＠ｅｘａｍｐｌｅ．ｃｏｍ",
    ],
)
async def test_an_address_that_looks_like_a_taken_one_is_taken(
    auth: AuthService, db: InMemoryDatabase, lookalike: str
) -> None:
    await auth.register(RegisterUser("kate@example.com", STRONG))
    before = repr(db.store)

    with pytest.raises(EmailTaken):
        await auth.register(RegisterUser(lookalike, STRONG))
    with pytest.raises(EmailTaken):
        await auth.create_user(CreateUser(OPERATOR, lookalike, STRONG, Role.STAFF))

    assert repr(db.store) == before


@pytest.mark.parametrize(
    "invisible",
    [
        "kate\u200b@example.com",
        "ka\u00adte@example.com",
        "kate\u2060@example.com",
        "k\u3164ate@example.com",
        "kate\x07@example.com",
        "\u202ekate@example.com",
    ],
)
async def test_addresses_with_invisible_or_control_characters_are_refused(
    auth: AuthService, db: InMemoryDatabase, invisible: str
) -> None:
    with pytest.raises(Invalid) as caught:
        await auth.register(RegisterUser(invisible, STRONG))
    assert (caught.value.code, caught.value.details) == (
        "validation_failed",
        {"fields": {"email": "cannot contain invisible or control characters"}},
    )
    assert db.store.users == {}


async def test_a_fullwidth_address_is_stored_in_its_plain_form(auth: AuthService) -> None:
    user = await auth.register(RegisterUser("ｋａｔｅ@example.com", STRONG))
    assert user.email == "kate@example.com"
    pair = await auth.login(LogIn("KATE@example.com", STRONG))
    assert pair.access_token


# What the review found.
async def test_a_catch_up_that_fails_is_tried_again_and_never_lets_an_ended_session_through(
    db: InMemoryDatabase, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = _service(db, clock, FakePasswordHasher())
    await here.register(RegisterUser("alice@example.com", STRONG))
    pair = await here.login(LogIn("alice@example.com", STRONG, IP))
    await here.logout(LogOut(pair.refresh_token))
    there = _service(db, clock, FakePasswordHasher())  # another process, started after the logout
    there._access_tokens = here._access_tokens  # the same signing keys
    fails = [QueryTimedOut(200)]
    real = InMemoryRevokedSessions.changes

    async def flaky(self: InMemoryRevokedSessions, *args: object, **kwargs: object) -> object:
        if fails:
            raise fails.pop()
        return await real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(InMemoryRevokedSessions, "changes", flaky)

    with pytest.raises(QueryTimedOut):  # refused: it could not tell
        await there.authenticate(pair.access_token, IP)
    for _ in range(3):  # and every later request reads again until it can
        with pytest.raises(SessionEnded):
            await there.authenticate(pair.access_token, IP)


async def test_logging_out_a_spent_session_again_records_nothing_more(
    auth: AuthService, db: InMemoryDatabase, alice: User
) -> None:
    pair = await auth.login(LogIn("alice@example.com", STRONG, IP))
    await auth.logout(LogOut(pair.refresh_token))
    before = repr(db.store)
    for _ in range(50):
        await auth.logout(LogOut(pair.refresh_token))
    assert repr(db.store) == before
    assert len(db.store.revoked_sessions) == 1


async def test_a_password_change_ends_a_session_whose_refresh_tokens_just_expired(
    db: InMemoryDatabase, clock: FixedClock
) -> None:
    auth = _service(db, clock, FakePasswordHasher(), refresh_token_ttl=timedelta(hours=1))
    await auth.register(RegisterUser("alice@example.com", STRONG))
    old = await auth.login(LogIn("alice@example.com", STRONG, IP))
    clock.advance(minutes=59)
    refreshed = await auth.refresh(RefreshSession(old.refresh_token))  # its access token lives 15 minutes
    clock.advance(minutes=2)  # the family's refresh tokens have expired; that access token has not
    other = await auth.login(LogIn("alice@example.com", STRONG, IP))
    me = await auth.authenticate(other.access_token, IP)

    await auth.change_password(ChangePassword(me, STRONG, OTHER_STRONG))

    with pytest.raises(SessionEnded):
        await auth.authenticate(refreshed.access_token, IP)


async def test_a_weak_new_password_is_refused_before_the_current_one_is_checked(
    auth: AuthService, db: InMemoryDatabase, alice: User
) -> None:
    me = Actor(user_id=alice.id, role=Role.CUSTOMER, source_ip=IP)
    before = repr(db.store)
    for guess in [STRONG, *(f"guess number {n}" for n in range(30))]:
        with pytest.raises(Invalid) as caught:
            await auth.change_password(ChangePassword(me, guess, "password1234"))
        assert list(caught.value.details["fields"]) == ["new_password"]  # the same answer, right or wrong
    assert repr(db.store) == before  # no attempt counted, nothing audited: nothing learnt either way
    await auth.change_password(ChangePassword(me, STRONG, OTHER_STRONG))


def test_ipv6_clients_are_counted_by_their_64_block() -> None:
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff::19") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert address_key("::ffff:203.0.113.7") == address_key("203.0.113.7") == "203.0.113.7"
    assert address_key("not-an-address") == "not-an-address"


async def test_registrations_from_one_ipv6_block_share_one_budget(auth: AuthService, db: InMemoryDatabase) -> None:
    for n in range(10):
        await auth.register(RegisterUser(f"user{n}@example.com", STRONG, f"2001:db8:1:2::{n + 1:x}"))
    with pytest.raises(RegistrationThrottled):
        await auth.register(RegisterUser("more@example.com", STRONG, "2001:db8:1:2:abcd::1"))
    await auth.register(RegisterUser("neighbour@example.com", STRONG, "2001:db8:1:3::1"))


async def test_an_unknown_email_is_answered_like_a_known_one_while_sign_ups_fill_the_queue(
    db: InMemoryDatabase, clock: FixedClock
) -> None:
    hasher = BusyHasher()
    auth = _service(db, clock, hasher)
    await auth.register(RegisterUser("alice@example.com", STRONG))
    await auth.prepare()  # at start
    hasher.busy = True  # new hashes are refused from now on (sign-ups fill the queue)
    for email in ("alice@example.com", "nobody@example.com"):
        with pytest.raises(InvalidCredentials):
            await auth.login(LogIn(email, "a wrong password!!", IP))


class BusyHasher(FakePasswordHasher):
    """New hashes refused while ``busy``; checks go on (they go first in the real pool)."""

    busy = False

    async def hash(self, password: str) -> str:
        if self.busy:
            raise PasswordHashingBusy()
        return await super().hash(password)

    async def verify(self, password_hash: str, password: str) -> bool:
        return password_hash == await FakePasswordHasher().hash(password)


async def test_an_admin_demoted_while_creating_an_account_creates_nothing(
    auth: AuthService, db: InMemoryDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, _second = await _admins(auth, 2)
    assert first.user_id is not None
    real_hash = FakePasswordHasher.hash

    async def demoted_meanwhile(self: FakePasswordHasher, password: str) -> str:
        db.store.users[first.user_id].role = Role.STAFF  # type: ignore[index]
        return await real_hash(self, password)

    monkeypatch.setattr(FakePasswordHasher, "hash", demoted_meanwhile)
    with pytest.raises(NotAllowed):
        await auth.create_user(CreateUser(first, "new-admin@example.com", STRONG, Role.ADMIN))
    assert "new-admin@example.com" not in {u.email for u in users(db)}


@pytest.mark.parametrize("blank", ["\u2800", "\u3164", "\ufeff"])
async def test_characters_that_render_as_nothing_are_refused(auth: AuthService, blank: str) -> None:
    with pytest.raises(Invalid):
        await auth.register(RegisterUser(f"ka{blank}te@example.com", STRONG))

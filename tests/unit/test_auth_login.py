"""Logging in: tokens, refresh-token families, failures, throttling, audit."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from unittest.mock import ANY

import pytest

from core.domain.audit import AuditEntry
from core.domain.errors import AccountDisabled, InvalidCredentials, LoginThrottled
from core.domain.users import Actor, RefreshToken, Role, User, UserStatus
from core.services.auth import AuthService, CreateUser, LogIn, RegisterUser, UpdateUser
from tests.fakes import FakeAccessTokens, FakePasswordHasher, FixedClock, InMemoryDatabase
from tests.unit.helpers import START, STRONG, audit, tokens

IP = "198.51.100.9"


@pytest.fixture
async def alice(auth: AuthService) -> User:
    return await auth.register(RegisterUser(email="alice@example.com", password=STRONG))


@pytest.fixture
async def bob(auth: AuthService) -> User:
    return await auth.register(RegisterUser(email="bob@example.com", password=STRONG))


async def _fail(auth: AuthService, email: str, ip: str | None = IP) -> None:
    with pytest.raises(InvalidCredentials):
        await auth.login(LogIn(email=email, password="not-the-password", source_ip=ip))


async def test_login_returns_tokens_and_stores_only_the_digest_of_the_refresh_token(
    auth: AuthService, db: InMemoryDatabase, alice: User, access_tokens: FakeAccessTokens
) -> None:
    pair = await auth.login(LogIn(email="Alice@Example.com", password=STRONG, source_ip=IP))

    claims = access_tokens.verify(pair.access_token)
    assert (claims.user_id, claims.role) == (alice.id, Role.CUSTOMER)
    assert pair.expires_in == 900
    assert tokens(db) == [
        RefreshToken(
            id=ANY,
            user_id=alice.id,
            family_id=ANY,
            token_digest=hashlib.sha256(pair.refresh_token.encode()).hexdigest(),
            created_at=START,
            expires_at=START + timedelta(days=30),
        )
    ]
    assert tokens(db)[0].family_id.startswith("fam_")
    assert pair.refresh_token not in repr(db.store)


async def test_each_login_starts_its_own_family(auth: AuthService, db: InMemoryDatabase, alice: User) -> None:
    first = await auth.login(LogIn(email="alice@example.com", password=STRONG))
    second = await auth.login(LogIn(email="alice@example.com", password=STRONG))

    assert first.refresh_token != second.refresh_token
    assert first.access_token != second.access_token
    assert len({t.family_id for t in tokens(db)}) == 2


async def test_login_success_is_audited_with_the_source_ip(
    auth: AuthService, db: InMemoryDatabase, alice: User
) -> None:
    await auth.login(LogIn(email="alice@example.com", password=STRONG, source_ip=IP))

    assert audit(db)[-1] == AuditEntry(
        id=ANY,
        at=START,
        actor_id=alice.id,
        action="auth.login_succeeded",
        object_type="user",
        object_id=alice.id,
        source_ip=IP,
        details={},
    )


async def test_wrong_password_and_unknown_email_fail_alike(
    auth: AuthService, db: InMemoryDatabase, alice: User
) -> None:
    with pytest.raises(InvalidCredentials) as wrong_password:
        await auth.login(LogIn(email="alice@example.com", password="not-the-password", source_ip=IP))
    with pytest.raises(InvalidCredentials) as unknown_email:
        await auth.login(LogIn(email="nobody@example.com", password=STRONG, source_ip=IP))
    with pytest.raises(InvalidCredentials) as malformed_email:
        await auth.login(LogIn(email="not an email", password=STRONG, source_ip=IP))

    errors = (wrong_password.value, unknown_email.value, malformed_email.value)
    assert {(e.code, e.message, str(e.details)) for e in errors} == {
        ("invalid_credentials", "Email or password is wrong.", "{}")
    }
    assert db.store.refresh_tokens == {}


async def test_login_failures_are_audited_with_the_source_ip(
    auth: AuthService, db: InMemoryDatabase, alice: User
) -> None:
    await _fail(auth, "Alice@example.com")
    await _fail(auth, "nobody@example.com", ip="192.0.2.1")

    assert audit(db)[-2:] == [
        AuditEntry(
            id=ANY,
            at=START,
            actor_id=None,  # the caller is anonymous; the account is the object
            action="auth.login_failed",
            object_type="user",
            object_id=alice.id,
            source_ip=IP,
            details={"email": "alice@example.com"},
        ),
        AuditEntry(
            id=ANY,
            at=START,
            actor_id=None,
            action="auth.login_failed",
            object_type="user",
            object_id=None,
            source_ip="192.0.2.1",
            details={"email": "nobody@example.com"},
        ),
    ]


async def test_disabled_account_cannot_log_in(auth: AuthService, db: InMemoryDatabase, alice: User) -> None:
    await auth.update_user(UpdateUser(actor=Actor.operator(), user_id=alice.id, status=UserStatus.DISABLED))

    with pytest.raises(AccountDisabled) as caught:
        await auth.login(LogIn(email="alice@example.com", password=STRONG, source_ip=IP))

    assert caught.value.code == "account_disabled"
    assert db.store.refresh_tokens == {}
    assert audit(db)[-1] == AuditEntry(
        id=ANY,
        at=START,
        actor_id=alice.id,
        action="auth.login_refused",
        object_type="user",
        object_id=alice.id,
        source_ip=IP,
        details={"reason": "disabled"},
    )
    # Without the right password a disabled account looks like any other failure.
    await _fail(auth, "alice@example.com")


# Throttling.
async def test_five_failures_throttle_the_account(auth: AuthService, alice: User, clock: FixedClock) -> None:
    for _ in range(5):
        await _fail(auth, "alice@example.com")

    # Even the right password is refused while throttled, from any IP and in any case.
    with pytest.raises(LoginThrottled) as caught:
        await auth.login(LogIn(email="ALICE@example.com", password=STRONG, source_ip="192.0.2.44"))

    error = caught.value
    assert error.code == "too_many_login_attempts"
    assert error.details == {"retry_after": error.retry_after}
    assert 1 <= error.retry_after <= 901
    clock.advance(seconds=error.retry_after - 2)
    with pytest.raises(LoginThrottled):
        await auth.login(LogIn(email="alice@example.com", password=STRONG, source_ip=IP))
    clock.advance(seconds=2)
    pair = await auth.login(LogIn(email="alice@example.com", password=STRONG, source_ip=IP))
    assert pair.refresh_token


async def test_four_failures_do_not_throttle(auth: AuthService, alice: User) -> None:
    for _ in range(4):
        await _fail(auth, "alice@example.com")

    assert (await auth.login(LogIn(email="alice@example.com", password=STRONG, source_ip=IP))).access_token


async def test_throttling_one_account_leaves_others_alone(auth: AuthService, alice: User, bob: User) -> None:
    for _ in range(5):
        await _fail(auth, "alice@example.com")

    pair = await auth.login(LogIn(email="bob@example.com", password=STRONG, source_ip=IP))

    assert pair.refresh_token
    with pytest.raises(LoginThrottled):
        await auth.login(LogIn(email="alice@example.com", password=STRONG, source_ip=IP))


async def test_throttled_attempts_are_not_checked_or_audited(
    auth: AuthService, db: InMemoryDatabase, alice: User
) -> None:
    for _ in range(5):
        await _fail(auth, "alice@example.com")
    before = len(audit(db))

    with pytest.raises(LoginThrottled):
        await auth.login(LogIn(email="alice@example.com", password=STRONG, source_ip=IP))

    assert len(audit(db)) == before
    assert db.store.refresh_tokens == {}


async def test_unknown_emails_are_throttled_too(auth: AuthService) -> None:
    for _ in range(5):
        await _fail(auth, "nobody@example.com")

    with pytest.raises(LoginThrottled):
        await auth.login(LogIn(email="nobody@example.com", password=STRONG, source_ip="192.0.2.1"))


async def test_twenty_failures_from_one_ip_throttle_that_ip(auth: AuthService, alice: User) -> None:
    for n in range(20):
        await _fail(auth, f"guess{n}@example.com", ip="203.0.113.66")

    with pytest.raises(LoginThrottled) as caught:
        await auth.login(LogIn(email="alice@example.com", password=STRONG, source_ip="203.0.113.66"))
    assert caught.value.code == "too_many_login_attempts"
    # The same account from another address is fine: the account itself has no failures.
    assert (await auth.login(LogIn(email="alice@example.com", password=STRONG, source_ip=IP))).access_token


async def test_nineteen_failures_from_one_ip_do_not_throttle(auth: AuthService, alice: User) -> None:
    for n in range(19):
        await _fail(auth, f"guess{n}@example.com", ip="203.0.113.66")

    pair = await auth.login(LogIn(email="alice@example.com", password=STRONG, source_ip="203.0.113.66"))

    assert pair.access_token


async def test_the_window_slides_with_the_clock(auth: AuthService, alice: User, clock: FixedClock) -> None:
    for _ in range(3):
        await _fail(auth, "alice@example.com")
    clock.advance(seconds=600)
    for _ in range(2):
        await _fail(auth, "alice@example.com")

    with pytest.raises(LoginThrottled) as caught:
        await auth.login(LogIn(email="alice@example.com", password=STRONG, source_ip=IP))
    # The oldest failures leave the 15-minute window 300 seconds from now.
    assert 300 <= caught.value.retry_after <= 301

    clock.advance(seconds=299)
    with pytest.raises(LoginThrottled):
        await auth.login(LogIn(email="alice@example.com", password=STRONG, source_ip=IP))
    clock.advance(seconds=1)
    # The first three failures have left the window; two remain, so three more are allowed.
    for _ in range(3):
        await _fail(auth, "alice@example.com")
    with pytest.raises(LoginThrottled):
        await auth.login(LogIn(email="alice@example.com", password=STRONG, source_ip=IP))


async def test_success_clears_the_accounts_failures(auth: AuthService, alice: User) -> None:
    for _ in range(4):
        await _fail(auth, "alice@example.com")
    await auth.login(LogIn(email="alice@example.com", password=STRONG, source_ip=IP))

    for _ in range(4):
        await _fail(auth, "alice@example.com")

    assert (await auth.login(LogIn(email="alice@example.com", password=STRONG, source_ip=IP))).access_token


async def test_success_does_not_clear_the_ips_failures(auth: AuthService, alice: User) -> None:
    for n in range(19):
        await _fail(auth, f"guess{n}@example.com", ip="203.0.113.66")
    await auth.login(LogIn(email="alice@example.com", password=STRONG, source_ip="203.0.113.66"))
    await _fail(auth, "guess-last@example.com", ip="203.0.113.66")

    with pytest.raises(LoginThrottled):
        await auth.login(LogIn(email="alice@example.com", password=STRONG, source_ip="203.0.113.66"))


# Rehashing on login.
class _UpgradingHasher(FakePasswordHasher):
    """Pretends the stored hashes were made with weaker parameters."""

    async def hash(self, password: str) -> str:
        return "v2" + await super().hash(password)

    async def verify(self, password_hash: str, password: str) -> bool:
        return password_hash.removeprefix("v2") == await super().hash(password)

    def needs_rehash(self, password_hash: str) -> bool:
        return not password_hash.startswith("v2")


async def test_login_rehashes_an_outdated_password_hash(
    db: InMemoryDatabase, access_tokens, opaque, throttle, skeletons, clock, ids, auth_settings
) -> None:
    old = AuthService(db, FakePasswordHasher(), access_tokens, opaque, throttle, skeletons, clock, ids, auth_settings)
    user = await old.create_user(CreateUser(actor=Actor.operator(), email="alice@example.com", password=STRONG))
    new = AuthService(db, _UpgradingHasher(), access_tokens, opaque, throttle, skeletons, clock, ids, auth_settings)
    clock.advance(minutes=1)

    await new.login(LogIn(email="alice@example.com", password=STRONG))

    stored = db.store.users[user.id]
    assert stored.password_hash == "v2" + user.password_hash
    assert stored.updated_at == START + timedelta(minutes=1)

"""Registration, accounts made by admins or the operator, and the current user."""

from __future__ import annotations

from unittest.mock import ANY

import pytest

from core.domain.audit import AuditEntry
from core.domain.errors import EmailTaken, NotAllowed, RegistrationClosed, TokenInvalid, UserNotFound, ValidationFailed
from core.domain.users import Actor, Role, User, UserStatus
from core.services.auth import AuthService, AuthSettings, CreateUser, RegisterUser, UpdateUser
from tests.fakes import FakePasswordHasher, FixedClock, InMemoryDatabase
from tests.unit.helpers import START, STRONG, audit, stored_actor, users


async def test_register_creates_an_active_customer_with_a_normalized_email(
    auth: AuthService, db: InMemoryDatabase, hasher: FakePasswordHasher
) -> None:
    user = await auth.register(RegisterUser(email="  Alice@Example.COM ", password=STRONG, source_ip="203.0.113.7"))

    expected = User(
        id=user.id,
        email="alice@example.com",
        email_skeleton="alice@exarnple.corn",  # UTS #39: "m" looks like "rn"
        password_hash=await hasher.hash(STRONG),
        role=Role.CUSTOMER,
        status=UserStatus.ACTIVE,
        created_at=START,
        updated_at=START,
    )
    assert user == expected
    assert user.id.startswith("usr_")
    assert users(db) == [expected]
    assert STRONG not in repr(db.store)


async def test_register_writes_an_audit_entry(auth: AuthService, db: InMemoryDatabase) -> None:
    user = await auth.register(RegisterUser(email="alice@example.com", password=STRONG, source_ip="203.0.113.7"))

    assert audit(db) == [
        AuditEntry(
            id=ANY,
            at=START,
            actor_id=user.id,
            action="user.created",
            object_type="user",
            object_id=user.id,
            source_ip="203.0.113.7",
            details={"role": "customer"},
        )
    ]


@pytest.mark.parametrize("again", ["alice@example.com", "ALICE@example.com", " Alice@EXAMPLE.com "])
async def test_register_twice_with_the_same_email_in_any_case_is_refused(
    auth: AuthService, db: InMemoryDatabase, again: str
) -> None:
    first = await auth.register(RegisterUser(email="alice@example.com", password=STRONG))

    with pytest.raises(EmailTaken) as caught:
        await auth.register(RegisterUser(email=again, password="another-long-passphrase"))

    assert caught.value.code == "email_taken"
    assert users(db) == [first]
    assert [e.action for e in audit(db)] == ["user.created"]


async def test_register_when_registration_is_closed(
    db: InMemoryDatabase, hasher: FakePasswordHasher, access_tokens, opaque, throttle, skeletons, clock, ids
) -> None:
    closed = AuthService(
        db, hasher, access_tokens, opaque, throttle, skeletons, clock, ids, AuthSettings(allow_registration=False)
    )

    with pytest.raises(RegistrationClosed) as caught:
        await closed.register(RegisterUser(email="alice@example.com", password=STRONG))

    assert caught.value.code == "registration_closed"
    assert isinstance(caught.value, NotAllowed)
    assert db.store.users == {}
    assert db.store.audit == {}
    # Closing self-registration does not stop admins from creating accounts.
    made = await closed.create_user(CreateUser(actor=Actor.operator(), email="bob@example.com", password=STRONG))
    assert users(db) == [made]


@pytest.mark.parametrize(
    ("email", "password", "fields"),
    [
        ("alice@example.com", "short", {"password": "must have at least 12 characters"}),
        ("alice@example.com", "password1234", {"password": "is too common or too easy to guess; choose another"}),
        ("alice@example.com", "x" * 129, {"password": "must have at most 128 characters"}),
        ("alice@example.com", "aaaabbbbaaaa", {"password": "is too common or too easy to guess; choose another"}),
        (
            "alice.longname@example.com",
            "ALICE.LONGNAME@example.com",
            {"password": "must not be the account's email address"},
        ),
        ("not-an-email", STRONG, {"email": "is not a valid email address"}),
    ],
)
async def test_register_refuses_bad_input_and_writes_nothing(
    auth: AuthService, db: InMemoryDatabase, email: str, password: str, fields: dict[str, str]
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await auth.register(RegisterUser(email=email, password=password))

    assert caught.value.code == "validation_failed"
    assert caught.value.details == {"fields": fields}
    assert db.store.users == {}
    assert db.store.audit == {}


async def test_operator_creates_a_user_with_any_role(auth: AuthService, db: InMemoryDatabase) -> None:
    admin = await auth.create_user(
        CreateUser(actor=Actor.operator(), email="Root@Example.com", password=STRONG, role=Role.ADMIN)
    )

    assert (admin.email, admin.role, admin.status) == ("root@example.com", Role.ADMIN, UserStatus.ACTIVE)
    assert users(db) == [admin]
    # The operator is nobody's account: the entry must not claim the new user created itself.
    assert audit(db) == [
        AuditEntry(
            id=ANY,
            at=START,
            actor_id=None,
            action="user.created",
            object_type="user",
            object_id=admin.id,
            source_ip="cli",
            details={"role": "admin"},
        )
    ]


async def test_admin_creates_a_staff_account_audited_as_the_admin(auth: AuthService, db: InMemoryDatabase) -> None:
    admin = stored_actor(db, "usr_admin", Role.ADMIN, "10.0.0.3")

    staff = await auth.create_user(CreateUser(actor=admin, email="sam@example.com", password=STRONG, role=Role.STAFF))

    assert staff.role is Role.STAFF
    assert audit(db) == [
        AuditEntry(
            id=ANY,
            at=START,
            actor_id="usr_admin",
            action="user.created",
            object_type="user",
            object_id=staff.id,
            source_ip="10.0.0.3",
            details={"role": "staff"},
        )
    ]


@pytest.mark.parametrize("role", [Role.CUSTOMER, Role.STAFF])
async def test_only_admins_create_users(auth: AuthService, db: InMemoryDatabase, role: Role) -> None:
    actor = stored_actor(db, "usr_x", role, "10.0.0.8")
    before = repr(db.store)
    with pytest.raises(NotAllowed) as caught:
        await auth.create_user(CreateUser(actor=actor, email="eve@example.com", password=STRONG, role=Role.ADMIN))

    assert caught.value.code == "forbidden"
    assert repr(db.store) == before


async def test_a_token_that_claims_admin_for_a_demoted_account_creates_nobody(
    auth: AuthService, db: InMemoryDatabase
) -> None:
    stored_actor(db, "usr_x", Role.STAFF, "10.0.0.8")
    before = repr(db.store)
    with pytest.raises(NotAllowed):
        await auth.create_user(
            CreateUser(actor=Actor(user_id="usr_x", role=Role.ADMIN), email="eve@example.com", password=STRONG)
        )
    assert repr(db.store) == before


async def test_create_user_applies_the_same_rules_as_registration(auth: AuthService, db: InMemoryDatabase) -> None:
    await auth.create_user(CreateUser(actor=Actor.operator(), email="bob@example.com", password=STRONG))

    with pytest.raises(EmailTaken):
        await auth.create_user(CreateUser(actor=Actor.operator(), email="BOB@example.com", password=STRONG))
    with pytest.raises(ValidationFailed) as caught:
        await auth.create_user(CreateUser(actor=Actor.operator(), email="carol@example.com", password="changeme1234"))
    assert caught.value.details == {"fields": {"password": "is too common or too easy to guess; choose another"}}
    assert [u.email for u in users(db)] == ["bob@example.com"]


async def test_current_user(auth: AuthService, clock: FixedClock) -> None:
    user = await auth.register(RegisterUser(email="alice@example.com", password=STRONG))

    assert await auth.current_user(Actor(user_id=user.id, role=Role.CUSTOMER)) == user
    with pytest.raises(TokenInvalid) as caught:
        await auth.current_user(Actor(user_id="usr_gone", role=Role.CUSTOMER))
    assert caught.value.code == "invalid_token"
    with pytest.raises(UserNotFound):
        await auth.current_user(Actor.operator())


async def test_current_user_of_a_disabled_account_is_refused(auth: AuthService) -> None:
    user = await auth.register(RegisterUser(email="alice@example.com", password=STRONG))
    await auth.update_user(UpdateUser(actor=Actor.operator(), user_id=user.id, status=UserStatus.DISABLED))

    with pytest.raises(TokenInvalid) as caught:
        await auth.current_user(Actor(user_id=user.id, role=Role.CUSTOMER))

    assert caught.value.code == "invalid_token"

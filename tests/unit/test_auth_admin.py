"""User administration: listing, roles and status, and the guard against locking oneself out."""

from __future__ import annotations

from datetime import timedelta
from unittest.mock import ANY

import pytest

from core.domain.audit import AuditEntry
from core.domain.errors import Conflict, NotAllowed, TokenInvalid, UserNotFound
from core.domain.pagination import PageRequest
from core.domain.users import Actor, Role, User, UserStatus
from core.ports.repositories import UserFilter
from core.services.auth import AuthService, CreateUser, ListUsers, LogIn, RefreshSession, UpdateUser
from tests.fakes import FixedClock, InMemoryDatabase
from tests.unit.helpers import START, STRONG, audit, stored_actor, tokens

OPERATOR = Actor.operator()


@pytest.fixture
async def admin(auth: AuthService) -> User:
    return await auth.create_user(
        CreateUser(actor=OPERATOR, email="root@example.com", password=STRONG, role=Role.ADMIN)
    )


@pytest.fixture
def as_admin(admin: User) -> Actor:
    return Actor(user_id=admin.id, role=Role.ADMIN, source_ip="10.0.0.3")


async def _make(auth: AuthService, n: int, role: Role = Role.CUSTOMER) -> list[User]:
    return [
        await auth.create_user(
            CreateUser(actor=OPERATOR, email=f"{role.value}{i}@example.com", password=STRONG, role=role)
        )
        for i in range(n)
    ]


# Listing.
@pytest.mark.parametrize("role", [Role.CUSTOMER, Role.STAFF])
async def test_only_admins_list_or_read_users(auth: AuthService, db: InMemoryDatabase, admin: User, role: Role) -> None:
    actor = stored_actor(db, "usr_x", role, "10.0.0.8")

    with pytest.raises(NotAllowed) as caught:
        await auth.list_users(ListUsers(actor=actor))
    assert caught.value.code == "forbidden"
    with pytest.raises(NotAllowed):
        await auth.get_user(actor, admin.id)


async def test_get_user(auth: AuthService, admin: User, as_admin: Actor) -> None:
    assert await auth.get_user(as_admin, admin.id) == admin
    with pytest.raises(UserNotFound) as caught:
        await auth.get_user(as_admin, "usr_missing")
    assert (caught.value.code, caught.value.details) == ("user_not_found", {"user_id": "usr_missing"})


async def test_pages_cover_every_user_once_in_id_order(auth: AuthService, admin: User, as_admin: Actor) -> None:
    everyone = [admin, *await _make(auth, 6)]

    seen: list[list[str]] = []
    after = None
    while True:
        page = await auth.list_users(ListUsers(actor=as_admin, page=PageRequest(limit=3, after=after)))
        seen.append([u.id for u in page.items])
        if not page.has_more:
            break
        after = page.next_after

    ids = [u.id for u in everyone]
    assert seen == [ids[0:3], ids[3:6], ids[6:7]]


async def test_an_exactly_full_last_page_has_no_more(auth: AuthService, admin: User, as_admin: Actor) -> None:
    await _make(auth, 3)

    page = await auth.list_users(ListUsers(actor=as_admin, page=PageRequest(limit=4)))

    assert (len(page.items), page.next_after, page.has_more) == (4, None, False)


async def test_list_filters_by_role_and_status(auth: AuthService, admin: User, as_admin: Actor) -> None:
    customers = await _make(auth, 3)
    staff = await _make(auth, 2, Role.STAFF)
    await auth.update_user(UpdateUser(actor=as_admin, user_id=customers[1].id, status=UserStatus.DISABLED))

    async def ids(**filter_fields: object) -> list[str]:
        page = await auth.list_users(ListUsers(actor=as_admin, filter=UserFilter(**filter_fields)))  # type: ignore[arg-type]
        return [u.id for u in page.items]

    assert await ids(role=Role.STAFF) == [u.id for u in staff]
    assert await ids(role=Role.ADMIN) == [admin.id]
    assert await ids(status=UserStatus.DISABLED) == [customers[1].id]
    assert await ids(role=Role.CUSTOMER, status=UserStatus.ACTIVE) == [customers[0].id, customers[2].id]
    assert await ids(email="staff1@example.com") == [staff[1].id]


async def test_filtered_pages_have_no_gaps(auth: AuthService, admin: User, as_admin: Actor) -> None:
    # Customers and staff interleaved, so that every page of customers skips staff ids.
    customers: list[User] = []
    for i in range(5):
        customers.append(await auth.create_user(CreateUser(actor=OPERATOR, email=f"c{i}@example.com", password=STRONG)))
        await auth.create_user(CreateUser(actor=OPERATOR, email=f"s{i}@example.com", password=STRONG, role=Role.STAFF))

    first = await auth.list_users(
        ListUsers(actor=as_admin, page=PageRequest(limit=2), filter=UserFilter(role=Role.CUSTOMER))
    )
    second = await auth.list_users(
        ListUsers(
            actor=as_admin, page=PageRequest(limit=2, after=first.next_after), filter=UserFilter(role=Role.CUSTOMER)
        )
    )
    third = await auth.list_users(
        ListUsers(
            actor=as_admin, page=PageRequest(limit=2, after=second.next_after), filter=UserFilter(role=Role.CUSTOMER)
        )
    )

    assert [[u.id for u in p.items] for p in (first, second, third)] == [
        [customers[0].id, customers[1].id],
        [customers[2].id, customers[3].id],
        [customers[4].id],
    ]
    assert third.next_after is None


# Changing users.
async def test_change_role_is_audited_with_before_after_and_actor(
    auth: AuthService, db: InMemoryDatabase, clock: FixedClock, as_admin: Actor
) -> None:
    (carol,) = await _make(auth, 1)
    clock.advance(minutes=3)

    updated = await auth.update_user(UpdateUser(actor=as_admin, user_id=carol.id, role=Role.STAFF))

    at = START + timedelta(minutes=3)
    assert (updated.role, updated.status, updated.updated_at) == (Role.STAFF, UserStatus.ACTIVE, at)
    assert db.store.users[carol.id] == updated
    assert audit(db)[-1] == AuditEntry(
        id=ANY,
        at=at,
        actor_id=as_admin.user_id,
        action="user.role_changed",
        object_type="user",
        object_id=carol.id,
        source_ip="10.0.0.3",
        details={"before": "customer", "after": "staff"},
    )


async def test_disabling_is_audited_and_revokes_every_session(
    auth: AuthService, db: InMemoryDatabase, clock: FixedClock, as_admin: Actor
) -> None:
    (carol,) = await _make(auth, 1)
    pairs = [await auth.login(LogIn(email=carol.email, password=STRONG)) for _ in range(2)]
    clock.advance(minutes=3)

    updated = await auth.update_user(UpdateUser(actor=as_admin, user_id=carol.id, status=UserStatus.DISABLED))

    at = START + timedelta(minutes=3)
    assert updated.status is UserStatus.DISABLED
    assert db.store.users[carol.id].status is UserStatus.DISABLED
    assert {t.revoked_at for t in tokens(db)} == {at}
    for pair in pairs:
        with pytest.raises(TokenInvalid):
            await auth.refresh(RefreshSession(refresh_token=pair.refresh_token))
    assert audit(db)[-1] == AuditEntry(
        id=ANY,
        at=at,
        actor_id=as_admin.user_id,
        action="user.status_changed",
        object_type="user",
        object_id=carol.id,
        source_ip="10.0.0.3",
        details={"before": "active", "after": "disabled"},
    )


async def test_role_and_status_together_give_two_entries(
    auth: AuthService, db: InMemoryDatabase, as_admin: Actor
) -> None:
    (carol,) = await _make(auth, 1)
    count = len(audit(db))

    await auth.update_user(UpdateUser(actor=as_admin, user_id=carol.id, role=Role.ADMIN, status=UserStatus.DISABLED))

    new = audit(db)[count:]
    assert [(e.action, e.details) for e in new] == [
        ("user.role_changed", {"before": "customer", "after": "admin"}),
        ("user.status_changed", {"before": "active", "after": "disabled"}),
    ]


async def test_re_enabling_does_not_revive_revoked_sessions(
    auth: AuthService, db: InMemoryDatabase, as_admin: Actor
) -> None:
    (carol,) = await _make(auth, 1)
    pair = await auth.login(LogIn(email=carol.email, password=STRONG))
    await auth.update_user(UpdateUser(actor=as_admin, user_id=carol.id, status=UserStatus.DISABLED))

    await auth.update_user(UpdateUser(actor=as_admin, user_id=carol.id, status=UserStatus.ACTIVE))

    with pytest.raises(TokenInvalid):
        await auth.refresh(RefreshSession(refresh_token=pair.refresh_token))
    assert (await auth.login(LogIn(email=carol.email, password=STRONG))).refresh_token
    assert [e.details for e in audit(db) if e.action == "user.status_changed"] == [
        {"before": "active", "after": "disabled"},
        {"before": "disabled", "after": "active"},
    ]


async def test_an_update_that_changes_nothing_writes_no_audit_entry(
    auth: AuthService, db: InMemoryDatabase, clock: FixedClock, as_admin: Actor
) -> None:
    (carol,) = await _make(auth, 1)
    before = audit(db)
    clock.advance(minutes=3)

    updated = await auth.update_user(
        UpdateUser(actor=as_admin, user_id=carol.id, role=Role.CUSTOMER, status=UserStatus.ACTIVE)
    )

    assert updated == carol
    assert audit(db) == before


@pytest.mark.parametrize(
    "change",
    [
        {"role": Role.STAFF},
        {"role": Role.CUSTOMER},
        {"status": UserStatus.DISABLED},
        {"role": Role.ADMIN, "status": UserStatus.DISABLED},
    ],
)
async def test_an_admin_cannot_demote_or_disable_themselves(
    auth: AuthService, db: InMemoryDatabase, admin: User, as_admin: Actor, change: dict[str, object]
) -> None:
    before = repr(db.store)

    with pytest.raises(Conflict) as caught:
        await auth.update_user(UpdateUser(actor=as_admin, user_id=admin.id, **change))  # type: ignore[arg-type]

    assert caught.value.code == "cannot_change_self"
    assert repr(db.store) == before


async def test_an_admin_may_confirm_their_own_role_and_status(
    auth: AuthService, db: InMemoryDatabase, admin: User, as_admin: Actor
) -> None:
    updated = await auth.update_user(
        UpdateUser(actor=as_admin, user_id=admin.id, role=Role.ADMIN, status=UserStatus.ACTIVE)
    )

    assert updated == admin


async def test_another_admin_may_demote_an_admin(auth: AuthService, admin: User, as_admin: Actor) -> None:
    (second,) = await _make(auth, 1, Role.ADMIN)

    demoted = await auth.update_user(
        UpdateUser(actor=Actor(user_id=second.id, role=Role.ADMIN), user_id=admin.id, role=Role.STAFF)
    )

    assert demoted.role is Role.STAFF


async def test_update_of_an_unknown_user(auth: AuthService, db: InMemoryDatabase, as_admin: Actor) -> None:
    with pytest.raises(UserNotFound) as caught:
        await auth.update_user(UpdateUser(actor=as_admin, user_id="usr_missing", role=Role.STAFF))

    assert (caught.value.code, caught.value.details) == ("user_not_found", {"user_id": "usr_missing"})


@pytest.mark.parametrize("role", [Role.CUSTOMER, Role.STAFF])
async def test_only_admins_update_users(auth: AuthService, db: InMemoryDatabase, admin: User, role: Role) -> None:
    actor = stored_actor(db, "usr_x", role, "10.0.0.8")
    before = repr(db.store)

    with pytest.raises(NotAllowed) as caught:
        await auth.update_user(UpdateUser(actor=actor, user_id=admin.id, role=Role.STAFF))

    assert caught.value.code == "forbidden"
    assert repr(db.store) == before


async def test_the_operator_updates_users_and_is_audited_as_nobody(
    auth: AuthService, db: InMemoryDatabase, admin: User
) -> None:
    await _make(auth, 1, Role.ADMIN)  # not the last admin
    updated = await auth.update_user(UpdateUser(actor=OPERATOR, user_id=admin.id, status=UserStatus.DISABLED))

    assert updated.status is UserStatus.DISABLED
    assert (audit(db)[-1].actor_id, audit(db)[-1].source_ip) == (None, "cli")


async def test_authorize_reads_the_current_role_and_status(auth: AuthService, db: InMemoryDatabase) -> None:
    operator = Actor.operator()
    user = await auth.create_user(CreateUser(actor=operator, email="st@example.com", password=STRONG, role=Role.STAFF))
    stale = Actor(user_id=user.id, role=Role.ADMIN, source_ip="203.0.113.5")

    fresh = await auth.authorize(stale)

    assert fresh == Actor(user_id=user.id, role=Role.STAFF, source_ip="203.0.113.5")
    db.store.users[user.id].status = UserStatus.DISABLED
    with pytest.raises(TokenInvalid):
        await auth.authorize(stale)

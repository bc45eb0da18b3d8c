"""ApiKeyService on the fakes: who may make, see and revoke keys, and what a key's secret
authenticates as (its owner as they are now, its scopes narrowed to their role's)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.domain.api_keys import ApiKey
from core.domain.errors import (
    ApiKeyNotFound,
    InsufficientScope,
    Invalid,
    NotAllowed,
    TokenInvalid,
    UserNotFound,
    ValidationFailed,
)
from core.domain.pagination import PageRequest
from core.domain.scopes import ROLE_SCOPES
from core.domain.users import Actor, Role, UserStatus
from core.services.api_keys import ApiKeyService, CreateApiKey, ListApiKeys, RevokeApiKey
from core.services.auth import AuthService
from tests.fakes import FakeKeyedDigest, FakeOpaqueTokens, FixedClock, InMemoryDatabase, SequentialIds
from tests.unit.helpers import START, audit, stored_actor

DAY = timedelta(days=1)
READS = frozenset({"catalog:read", "orders:read"})


@pytest.fixture
def keys(db: InMemoryDatabase, opaque: FakeOpaqueTokens, clock: FixedClock, ids: SequentialIds) -> ApiKeyService:
    return ApiKeyService(db, opaque, FakeKeyedDigest(), clock, ids)


def create(actor: Actor, scopes: object = "catalog:read orders:read", **kwargs: object) -> CreateApiKey:
    fields: dict[str, object] = {"name": "Nightly export", "expires_in": 30 * DAY, **kwargs}
    return CreateApiKey(actor=actor, scopes=scopes, **fields)  # type: ignore[arg-type]


def stored(db: InMemoryDatabase) -> list[ApiKey]:
    return sorted(db.store.api_keys.values(), key=lambda k: k.id)


async def test_an_admin_creates_a_key_whose_secret_is_shown_once_and_stored_as_a_keyed_digest(
    keys: ApiKeyService, db: InMemoryDatabase, admin_actor: Actor
) -> None:
    new = await keys.create(create(admin_actor, ["orders:read", "catalog:read"], name="  Nightly export  "))

    assert new.secret.startswith("tbk_") and len(new.secret) >= 4 + 43  # 32 random bytes, url-safe
    assert new.key == ApiKey(
        id="key_000000000001",
        user_id="usr_admin",
        name="Nightly export",
        scopes=READS,
        secret_digest=FakeKeyedDigest().digest(new.secret.encode()),
        created_at=START,
        expires_at=START + 30 * DAY,
    )
    assert stored(db) == [new.key]
    assert new.secret not in repr(new) and new.secret not in repr(db.store)
    [entry] = audit(db)
    assert (entry.action, entry.actor_id, entry.object_type, entry.object_id, entry.source_ip) == (
        "api_key.created",
        "usr_admin",
        "api_key",
        "key_000000000001",
        "10.0.0.3",
    )
    assert entry.details == {
        "user_id": "usr_admin",
        "name": "Nightly export",
        "scopes": "catalog:read orders:read",
        "expires_at": "2026-01-31T00:00:00.000000Z",
    }


async def test_two_keys_have_different_secrets(keys: ApiKeyService, admin_actor: Actor) -> None:
    first, second = await keys.create(create(admin_actor)), await keys.create(create(admin_actor))
    assert first.secret != second.secret
    assert first.key.secret_digest != second.key.secret_digest


@pytest.mark.parametrize("role", [Role.STAFF, Role.CUSTOMER])
async def test_only_admins_create_keys(keys: ApiKeyService, db: InMemoryDatabase, role: Role) -> None:
    actor = stored_actor(db, "usr_someone", role, "10.0.0.9")
    with pytest.raises(NotAllowed) as refused:
        await keys.create(create(actor))
    assert refused.value.code == "forbidden"
    assert (stored(db), audit(db)) == ([], [])


async def test_an_admin_demoted_since_their_token_was_issued_creates_none(
    keys: ApiKeyService, db: InMemoryDatabase, admin_actor: Actor
) -> None:
    db.store.users["usr_admin"].role = Role.STAFF  # the token still says admin
    with pytest.raises(NotAllowed):
        await keys.create(create(admin_actor))
    assert stored(db) == []


async def test_a_delegated_credential_cannot_mint_or_list_keys(
    keys: ApiKeyService, db: InMemoryDatabase, admin_actor: Actor
) -> None:
    delegated = Actor(user_id="usr_admin", role=Role.ADMIN, scopes=ROLE_SCOPES[Role.ADMIN])
    with pytest.raises(NotAllowed) as refused:
        await keys.create(create(delegated))
    assert refused.value.code == "forbidden"
    assert "cannot be created with an API key" in refused.value.message
    with pytest.raises(NotAllowed) as listing:
        await keys.list(ListApiKeys(actor=delegated))
    assert "cannot be listed with an API key" in listing.value.message
    assert stored(db) == []


@pytest.mark.parametrize(
    ("scopes", "field"),
    [("", "scopes"), ([], "scopes"), ("catalog:read catalog:fly", None), (["everything"], None)],
)
async def test_scopes_must_be_known_and_at_least_one(
    keys: ApiKeyService, db: InMemoryDatabase, admin_actor: Actor, scopes: object, field: str | None
) -> None:
    with pytest.raises(Invalid) as refused:
        await keys.create(create(admin_actor, scopes))
    if field is None:
        assert refused.value.code == "invalid_scope"
    else:
        assert refused.value.details == {"fields": {"scopes": "name at least one scope"}}
    assert stored(db) == []


@pytest.mark.parametrize(
    ("expires_in", "problem"),
    [
        (timedelta(minutes=59), "must be at least one hour ahead"),
        (timedelta(0), "must be at least one hour ahead"),
        (-DAY, "must be at least one hour ahead"),
        (366 * DAY, "must be at most 365 days ahead"),
    ],
)
async def test_the_expiry_is_an_hour_to_a_year_ahead(
    keys: ApiKeyService, db: InMemoryDatabase, admin_actor: Actor, expires_in: timedelta, problem: str
) -> None:
    with pytest.raises(ValidationFailed) as refused:
        await keys.create(create(admin_actor, expires_in=expires_in))
    assert refused.value.details == {"fields": {"expires_in_days": problem}}
    assert stored(db) == []


@pytest.mark.parametrize("lifetime", [timedelta(hours=1), 365 * DAY])
async def test_the_bounds_of_the_expiry_are_allowed(
    keys: ApiKeyService, admin_actor: Actor, lifetime: timedelta
) -> None:
    new = await keys.create(create(admin_actor, expires_in=lifetime))
    assert new.key.expires_at == START + lifetime


@pytest.mark.parametrize(
    ("name", "problem"),
    [("", "must not be empty"), ("   ", "must not be empty"), ("x" * 101, "must have at most 100 characters")],
)
async def test_the_name_is_1_to_100_characters(
    keys: ApiKeyService, db: InMemoryDatabase, admin_actor: Actor, name: str, problem: str
) -> None:
    with pytest.raises(ValidationFailed) as refused:
        await keys.create(create(admin_actor, name=name))
    assert refused.value.details == {"fields": {"name": problem}}
    assert stored(db) == []


async def test_an_admin_creates_keys_for_themselves_only(
    keys: ApiKeyService, db: InMemoryDatabase, admin_actor: Actor
) -> None:
    stored_actor(db, "usr_other_admin", Role.ADMIN, "10.0.0.8")
    with pytest.raises(NotAllowed):
        await keys.create(create(admin_actor, user_id="usr_other_admin"))
    assert stored(db) == []


async def test_the_operator_creates_a_key_for_an_admin_it_names(keys: ApiKeyService, db: InMemoryDatabase) -> None:
    stored_actor(db, "usr_boss", Role.ADMIN, "10.0.0.8")
    new = await keys.create(create(Actor.operator(), "audit:read", user_id="usr_boss"))
    assert (new.key.user_id, new.key.scopes) == ("usr_boss", frozenset({"audit:read"}))
    [entry] = audit(db)
    assert (entry.actor_id, entry.source_ip) == (None, "cli")


async def test_the_operator_cannot_give_a_key_to_a_non_admin_or_to_no_one(
    keys: ApiKeyService, db: InMemoryDatabase
) -> None:
    stored_actor(db, "usr_clerk", Role.STAFF, "10.0.0.8")
    with pytest.raises(NotAllowed) as not_admin:
        await keys.create(create(Actor.operator(), user_id="usr_clerk"))
    assert not_admin.value.message == "Only admins have personal API keys."
    with pytest.raises(UserNotFound):
        await keys.create(create(Actor.operator(), user_id="usr_nobody"))
    with pytest.raises(ValidationFailed):
        await keys.create(create(Actor.operator()))
    db.store.users["usr_clerk"].role = Role.ADMIN
    db.store.users["usr_clerk"].status = UserStatus.DISABLED
    with pytest.raises(NotAllowed) as disabled:
        await keys.create(create(Actor.operator(), user_id="usr_clerk"))
    assert disabled.value.code == "account_disabled"
    assert stored(db) == []


async def test_a_secret_authenticates_as_its_owner_with_the_key_scopes(keys: ApiKeyService, admin_actor: Actor) -> None:
    new = await keys.create(create(admin_actor))
    actor = await keys.authenticate(new.secret, "192.0.2.7")
    assert actor == Actor(user_id="usr_admin", role=Role.ADMIN, source_ip="192.0.2.7", scopes=READS)
    with pytest.raises(InsufficientScope):
        actor.require_scope("catalog:write")
    actor.require_scope("orders:read")


@pytest.mark.parametrize("secret", ["tbk_unknown", "tbk_", "tbk_" + "A" * 43])
async def test_an_unknown_secret_is_an_invalid_token(keys: ApiKeyService, admin_actor: Actor, secret: str) -> None:
    await keys.create(create(admin_actor))
    with pytest.raises(TokenInvalid) as refused:
        await keys.authenticate(secret, None)
    assert refused.value.code == "invalid_token"


async def test_a_revoked_key_is_refused_from_the_next_request(
    keys: ApiKeyService, db: InMemoryDatabase, admin_actor: Actor, clock: FixedClock
) -> None:
    new = await keys.create(create(admin_actor))
    await keys.authenticate(new.secret, None)
    clock.advance(seconds=5)
    revoked = await keys.revoke(RevokeApiKey(actor=admin_actor, key_id=new.key.id))
    assert revoked.revoked_at == START + timedelta(seconds=5)
    with pytest.raises(TokenInvalid) as refused:
        await keys.authenticate(new.secret, None)
    assert refused.value.message == "The API key is invalid, expired or revoked."
    assert [e.action for e in audit(db)] == ["api_key.created", "api_key.revoked"]
    assert audit(db)[1].details == {"user_id": "usr_admin"}
    # Again: nothing changes, nothing more is recorded.
    clock.advance(seconds=5)
    again = await keys.revoke(RevokeApiKey(actor=admin_actor, key_id=new.key.id))
    assert again.revoked_at == START + timedelta(seconds=5)
    assert len(audit(db)) == 2


async def test_a_key_expires(keys: ApiKeyService, admin_actor: Actor, clock: FixedClock) -> None:
    new = await keys.create(create(admin_actor, expires_in=timedelta(hours=1)))
    clock.advance(minutes=59, seconds=59)
    await keys.authenticate(new.secret, None)
    clock.advance(seconds=1)
    with pytest.raises(TokenInvalid):
        await keys.authenticate(new.secret, None)


async def test_a_disabled_owner_keys_are_refused_at_once_and_work_again_when_enabled(
    keys: ApiKeyService, db: InMemoryDatabase, admin_actor: Actor
) -> None:
    new = await keys.create(create(admin_actor))
    db.store.users["usr_admin"].status = UserStatus.DISABLED
    with pytest.raises(TokenInvalid) as refused:
        await keys.authenticate(new.secret, None)
    assert refused.value.message == "The account of this API key no longer exists or is disabled."
    db.store.users["usr_admin"].status = UserStatus.ACTIVE
    assert (await keys.authenticate(new.secret, None)).user_id == "usr_admin"


@pytest.mark.parametrize("role", [Role.STAFF, Role.CUSTOMER])
async def test_a_demoted_owner_key_keeps_only_what_the_new_role_allows(
    keys: ApiKeyService, db: InMemoryDatabase, admin_actor: Actor, role: Role
) -> None:
    new = await keys.create(create(admin_actor, "catalog:read catalog:write audit:read users:read"))
    db.store.users["usr_admin"].role = role
    actor = await keys.authenticate(new.secret, None)
    assert actor.role is role
    expected = {"catalog:read", "catalog:write", "users:read"} if role is Role.STAFF else {"catalog:read", "users:read"}
    assert actor.scopes == frozenset(expected)
    with pytest.raises(InsufficientScope):
        actor.require_scope("audit:read")


async def test_the_last_use_is_written_at_most_once_a_minute(
    keys: ApiKeyService, db: InMemoryDatabase, admin_actor: Actor, clock: FixedClock
) -> None:
    new = await keys.create(create(admin_actor))
    commits = db.commits
    await keys.authenticate(new.secret, None)
    assert db.store.api_keys[new.key.id].last_used_at == START
    assert db.commits == commits + 1
    clock.advance(seconds=59)
    await keys.authenticate(new.secret, None)
    await keys.authenticate(new.secret, None)
    assert db.store.api_keys[new.key.id].last_used_at == START
    assert db.commits == commits + 1  # no write for these
    clock.advance(seconds=1)
    await keys.authenticate(new.secret, None)
    assert db.store.api_keys[new.key.id].last_used_at == START + timedelta(minutes=1)
    assert db.commits == commits + 2


async def test_refused_secrets_record_no_use(keys: ApiKeyService, db: InMemoryDatabase, admin_actor: Actor) -> None:
    new = await keys.create(create(admin_actor))
    await keys.revoke(RevokeApiKey(actor=admin_actor, key_id=new.key.id))
    with pytest.raises(TokenInvalid):
        await keys.authenticate(new.secret, None)
    assert db.store.api_keys[new.key.id].last_used_at is None


async def test_owners_list_their_own_keys_newest_first_with_their_last_use(
    keys: ApiKeyService, db: InMemoryDatabase, admin_actor: Actor
) -> None:
    first = await keys.create(create(admin_actor, name="first"))
    second = await keys.create(create(admin_actor, name="second"))
    stored_actor(db, "usr_other_admin", Role.ADMIN, "10.0.0.8")
    other = Actor(user_id="usr_other_admin", role=Role.ADMIN)
    theirs = await keys.create(create(other, name="theirs"))
    await keys.authenticate(first.secret, None)

    page = await keys.list(ListApiKeys(actor=admin_actor, page=PageRequest(limit=1)))
    assert [k.name for k in page.items] == ["second"]
    rest = await keys.list(ListApiKeys(actor=admin_actor, page=PageRequest(limit=1, after=page.next_after)))
    assert [(k.name, k.last_used_at) for k in rest.items] == [("first", START)]
    assert rest.next_after is None
    everyone = await keys.list(ListApiKeys(actor=Actor.operator(), every_user=True))
    assert [k.id for k in everyone.items] == [theirs.key.id, second.key.id, first.key.id]
    # The operator (no account) with no user named: every key too.
    assert [k.id for k in (await keys.list(ListApiKeys(actor=Actor.operator()))).items] == [
        theirs.key.id,
        second.key.id,
        first.key.id,
    ]
    named = await keys.list(ListApiKeys(actor=admin_actor, user_id="usr_other_admin"))
    assert [k.id for k in named.items] == [theirs.key.id]


async def test_a_demoted_owner_still_lists_and_revokes_their_keys_but_sees_no_one_else(
    keys: ApiKeyService, db: InMemoryDatabase, admin_actor: Actor
) -> None:
    new = await keys.create(create(admin_actor))
    stored_actor(db, "usr_other_admin", Role.ADMIN, "10.0.0.8")
    db.store.users["usr_admin"].role = Role.STAFF
    mine = await keys.list(ListApiKeys(actor=admin_actor))
    assert [k.id for k in mine.items] == [new.key.id]
    with pytest.raises(NotAllowed):
        await keys.list(ListApiKeys(actor=admin_actor, every_user=True))
    with pytest.raises(NotAllowed):
        await keys.list(ListApiKeys(actor=admin_actor, user_id="usr_other_admin"))
    revoked = await keys.revoke(RevokeApiKey(actor=admin_actor, key_id=new.key.id))
    assert revoked.revoked_at == START


async def test_any_admin_revokes_anyone_key_others_hear_it_does_not_exist(
    keys: ApiKeyService, db: InMemoryDatabase, admin_actor: Actor, staff: Actor
) -> None:
    new = await keys.create(create(admin_actor))
    with pytest.raises(ApiKeyNotFound) as hidden:
        await keys.revoke(RevokeApiKey(actor=staff, key_id=new.key.id))
    assert hidden.value.details == {"api_key_id": new.key.id}
    with pytest.raises(ApiKeyNotFound):
        await keys.revoke(RevokeApiKey(actor=admin_actor, key_id="key_unknown"))
    assert db.store.api_keys[new.key.id].revoked_at is None
    stored_actor(db, "usr_other_admin", Role.ADMIN, "10.0.0.8")
    other = Actor(user_id="usr_other_admin", role=Role.ADMIN, source_ip="10.0.0.8")
    await keys.revoke(RevokeApiKey(actor=other, key_id=new.key.id))
    assert audit(db)[-1].actor_id == "usr_other_admin"
    assert db.store.api_keys[new.key.id].revoked_at == START


async def test_the_auth_service_sends_tbk_tokens_to_the_keys_and_others_to_the_token_verifier(
    db: InMemoryDatabase, keys: ApiKeyService, auth: AuthService, admin_actor: Actor
) -> None:
    new = await keys.create(create(admin_actor))
    wired = AuthService(
        db,
        auth._hasher,
        auth._access_tokens,
        auth._opaque,
        auth._throttle,
        auth._skeletons,
        auth._clock,
        auth._ids,
        auth._settings,
        api_keys=keys,
    )
    assert (await wired.authenticate(new.secret, "192.0.2.1")).scopes == READS
    with pytest.raises(TokenInvalid):
        await wired.authenticate("tbk_nope", None)
    # Not wired to the keys (a test's service): every tbk_ token is invalid, never verified as a JWT.
    with pytest.raises(TokenInvalid):
        await auth.authenticate(new.secret, None)


async def test_scopes_beyond_the_owner_role_are_refused(
    keys: ApiKeyService, db: InMemoryDatabase, admin_actor: Actor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An admin has every scope today; were a role ever to have fewer, a key could not exceed it.
    narrower = {**ROLE_SCOPES, Role.ADMIN: ROLE_SCOPES[Role.ADMIN] - {"clients:write", "audit:read"}}
    monkeypatch.setattr("core.services.api_keys.ROLE_SCOPES", narrower)
    with pytest.raises(NotAllowed) as refused:
        await keys.create(create(admin_actor, "catalog:read clients:write audit:read"))
    assert refused.value.code == "insufficient_scope"
    assert refused.value.message == "An API key cannot have scopes its owner lacks: audit:read, clients:write."
    assert refused.value.details == {"scopes": ["audit:read", "clients:write"]}
    assert (stored(db), audit(db)) == ([], [])

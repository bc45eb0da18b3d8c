"""OAuthService on the fakes: codes single use and bound to their client, a replayed code
ending its session, consents remembered and taken back, a client's own tokens only."""

from __future__ import annotations

import pytest

from core.domain.errors import NotAllowed, SessionEnded, TokenInvalid
from core.domain.grants import AuthorizationCode
from core.domain.oauth import ClientType, GrantType, OAuthClient
from core.domain.scopes import acting_role, role_for
from core.domain.users import Actor, Role, User
from core.services.auth import AuthService, ResetPassword
from core.services.clients import ClientService, RegisterClient, UpdateClient
from core.services.oauth import AuthorizationNotFound, GrantCode, OAuthGrantInvalid, OAuthService
from tests.fakes import FakeKeyedDigest, FakeOpaqueTokens, FixedClock, InMemoryDatabase, SequentialIds
from tests.unit.helpers import STRONG, actions

CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
OPERATOR = Actor.operator()


@pytest.fixture
def clients(db: InMemoryDatabase, clock: FixedClock, ids: SequentialIds, auth: AuthService) -> ClientService:
    return ClientService(db, FakeOpaqueTokens(), FakeKeyedDigest(), clock, ids, auth)


@pytest.fixture
def oauth(db: InMemoryDatabase, clock: FixedClock, ids: SequentialIds, auth: AuthService) -> OAuthService:
    return OAuthService(db, auth, FakeOpaqueTokens(), clock, ids)


async def _client(
    clients: ClientService, *grants: GrantType, scopes: tuple[str, ...] = ("orders:read",)
) -> OAuthClient:
    made = await clients.register(
        RegisterClient(
            actor=OPERATOR,
            name="Reports",
            type=ClientType.CONFIDENTIAL,
            redirect_uris=("https://app.example.com/cb",),
            grant_types=grants or (GrantType.AUTHORIZATION_CODE, GrantType.REFRESH_TOKEN),
            scopes=scopes,
        )
    )
    return made.client


def _user(db: InMemoryDatabase, user_id: str = "usr_customer") -> User:
    return db.store.users[user_id]


async def _code(oauth: OAuthService, user: User, client: OAuthClient, code: str = "the-code") -> None:
    await oauth.grant_code(
        GrantCode(
            user=user,
            client=client,
            redirect_uri="https://app.example.com/cb",
            scopes=frozenset({"orders:read"}),
            code_challenge=CHALLENGE,
            code=code,
        )
    )


async def test_a_code_is_exchanged_once_and_a_second_time_ends_the_session(
    oauth: OAuthService, clients: ClientService, auth: AuthService, customer: Actor, db: InMemoryDatabase
) -> None:
    client = await _client(clients)
    await _code(oauth, _user(db), client)
    record = await oauth.find_code("the-code", client)
    assert record is not None
    pair = await oauth.exchange_code(record, client)
    assert pair.scope == "orders:read" and pair.refresh_token
    actor = await auth.authenticate(pair.access_token, None)
    assert (actor.user_id, actor.scopes) == ("usr_customer", frozenset({"orders:read"}))

    assert await oauth.find_code("the-code", client) is None  # a replay: the session it began ends
    with pytest.raises(SessionEnded):
        await auth.authenticate(pair.access_token, None)
    assert [a for a in actions(db) if a.startswith("oauth.")] == [
        "oauth.consent_granted",
        "oauth.code_exchanged",
        "oauth.code_reused",
    ]


async def test_of_two_exchanges_that_both_found_the_code_the_second_ends_the_firsts_session(
    oauth: OAuthService, clients: ClientService, auth: AuthService, customer: Actor, db: InMemoryDatabase
) -> None:
    client = await _client(clients)
    await _code(oauth, _user(db), client)
    first, second = await oauth.find_code("the-code", client), await oauth.find_code("the-code", client)
    assert first is not None and second is not None
    pair = await oauth.exchange_code(first, client)
    with pytest.raises(OAuthGrantInvalid):
        await oauth.exchange_code(second, client)
    with pytest.raises(SessionEnded):
        await auth.authenticate(pair.access_token, None)


async def test_a_code_is_only_its_clients(
    oauth: OAuthService, clients: ClientService, customer: Actor, db: InMemoryDatabase
) -> None:
    client = await _client(clients)
    other = await _client(clients)
    await _code(oauth, _user(db), client)
    assert await oauth.find_code("the-code", other) is None
    assert await oauth.find_code("not-a-code", client) is None
    assert await oauth.find_code("the-code", client) is not None  # the other client's try spent nothing


async def test_consent_is_remembered_widened_and_taken_back_with_the_sessions(
    oauth: OAuthService, clients: ClientService, auth: AuthService, customer: Actor, db: InMemoryDatabase
) -> None:
    client = await _client(clients, scopes=("orders:read", "catalog:read"))
    user = _user(db)
    assert await oauth.needs_consent(user, client, frozenset({"orders:read"}))
    await _code(oauth, user, client)
    assert not await oauth.needs_consent(user, client, frozenset({"orders:read"}))
    assert await oauth.needs_consent(user, client, frozenset({"orders:read", "catalog:read"}))
    record = await oauth.find_code("the-code", client)
    assert record is not None
    pair = await oauth.exchange_code(record, client)

    (listed,) = await oauth.list_authorizations(customer)
    assert (listed.consent.client_id, listed.consent.scope, listed.client) == (client.id, "orders:read", client)
    await oauth.revoke_authorization(customer, client.id)
    with pytest.raises(SessionEnded):
        await auth.authenticate(pair.access_token, None)
    assert await oauth.list_authorizations(customer) == []
    with pytest.raises(AuthorizationNotFound):
        await oauth.revoke_authorization(customer, client.id)


async def test_only_an_admin_sees_or_takes_back_another_users_approvals(
    oauth: OAuthService, clients: ClientService, customer: Actor, staff: Actor, admin_actor: Actor, db: InMemoryDatabase
) -> None:
    client = await _client(clients)
    await _code(oauth, _user(db), client)
    with pytest.raises(NotAllowed) as refused:
        await oauth.list_authorizations(staff, "usr_customer")
    assert refused.value.code == "forbidden"
    assert len(await oauth.list_authorizations(admin_actor, "usr_customer")) == 1
    await oauth.revoke_authorization(admin_actor, client.id, "usr_customer")
    assert await oauth.list_authorizations(customer) == []


async def test_grantable_scopes_are_bounded_by_the_client_and_the_role(
    oauth: OAuthService, clients: ClientService, customer: Actor, db: InMemoryDatabase
) -> None:
    client = await _client(clients, scopes=("orders:read", "catalog:write"))
    asked = frozenset({"orders:read", "catalog:write", "audit:read"})
    assert oauth.grantable(_user(db), client, asked) == {"orders:read"}  # a customer may not write the catalog


async def test_revocation_and_introspection_see_only_the_clients_own_tokens(
    oauth: OAuthService, clients: ClientService, auth: AuthService, customer: Actor, db: InMemoryDatabase
) -> None:
    client = await _client(clients)
    other = await _client(clients)
    await _code(oauth, _user(db), client)
    record = await oauth.find_code("the-code", client)
    assert record is not None
    pair = await oauth.exchange_code(record, client)

    assert await oauth.introspect(other, pair.access_token) is None
    info = await oauth.introspect(client, pair.access_token)
    assert info is not None and (info.kind, info.user_id, info.scope) == ("access_token", "usr_customer", "orders:read")
    refresh = await oauth.introspect(client, pair.refresh_token)
    assert refresh is not None and refresh.kind == "refresh_token"

    await oauth.revoke(other, pair.refresh_token)  # not its token: nothing happens
    assert (await auth.authenticate(pair.access_token, None)).user_id == "usr_customer"
    await oauth.revoke(client, pair.refresh_token)
    with pytest.raises(SessionEnded):
        await auth.authenticate(pair.access_token, None)
    assert await oauth.introspect(client, pair.refresh_token) is None


async def test_client_credentials_act_as_the_least_role_covering_the_scopes(
    oauth: OAuthService, clients: ClientService, auth: AuthService
) -> None:
    service = await _client(clients, GrantType.CLIENT_CREDENTIALS, scopes=("catalog:write", "orders:read"))
    pair = await oauth.client_credentials(service, None)
    actor = await auth.authenticate(pair.access_token, "10.0.0.9")
    assert (actor.user_id, actor.client_id, actor.role) == (None, service.id, Role.STAFF)
    assert actor.scopes == {"catalog:write", "orders:read"}
    narrower = await oauth.client_credentials(service, frozenset({"orders:read"}))
    assert (await auth.authenticate(narrower.access_token, None)).role is Role.CUSTOMER
    with pytest.raises(OAuthGrantInvalid):
        await oauth.client_credentials(service, frozenset({"audit:read"}))
    code_client = await _client(clients)
    with pytest.raises(OAuthGrantInvalid):  # not registered for this grant
        await oauth.client_credentials(code_client, None)

    await clients.disable(OPERATOR, service.id)
    with pytest.raises(TokenInvalid):
        await auth.authenticate(pair.access_token, None)


def test_role_for_is_the_least_role_whose_work_covers_the_scopes() -> None:
    assert role_for([]) is Role.CUSTOMER
    assert role_for(["orders:read", "payments:write"]) is Role.CUSTOMER
    assert role_for(["refunds:write"]) is Role.STAFF
    assert role_for(["catalog:read", "audit:read"]) is Role.ADMIN


async def _exchangeable(oauth: OAuthService, client: OAuthClient) -> AuthorizationCode:
    record = await oauth.find_code("the-code", client)
    assert record is not None
    return record


async def test_a_code_gives_no_more_than_the_client_has_now(
    oauth: OAuthService, clients: ClientService, customer: Actor, db: InMemoryDatabase
) -> None:
    client = await _client(clients, scopes=("orders:read", "orders:write"))
    await oauth.grant_code(
        GrantCode(
            user=_user(db),
            client=client,
            redirect_uri="https://app.example.com/cb",
            scopes=frozenset({"orders:read", "orders:write"}),
            code_challenge=CHALLENGE,
            code="the-code",
        )
    )
    narrowed = await clients.update(UpdateClient(actor=OPERATOR, client_id=client.id, scopes=("orders:read",)))
    pair = await oauth.exchange_code(await _exchangeable(oauth, narrowed), narrowed)
    assert pair.scope == "orders:read"


async def test_a_code_made_before_a_password_reset_or_a_withdrawn_consent_gives_nothing(
    oauth: OAuthService,
    clients: ClientService,
    auth: AuthService,
    customer: Actor,
    db: InMemoryDatabase,
    clock: FixedClock,
) -> None:
    client = await _client(clients)
    await _code(oauth, _user(db), client)
    record = await _exchangeable(oauth, client)
    clock.advance(seconds=1)
    await auth.reset_password(ResetPassword(actor=OPERATOR, user_id="usr_customer", new_password=STRONG + "x"))
    with pytest.raises(OAuthGrantInvalid):
        await oauth.exchange_code(record, client)

    await _code(oauth, _user(db), client, code="second-code")
    second = await oauth.find_code("second-code", client)
    assert second is not None
    await oauth.revoke_authorization(customer, client.id)
    with pytest.raises(OAuthGrantInvalid):
        await oauth.exchange_code(second, client)


async def test_a_client_credentials_token_narrows_with_its_client_at_once(
    oauth: OAuthService, clients: ClientService, auth: AuthService
) -> None:
    service = await _client(clients, GrantType.CLIENT_CREDENTIALS, scopes=("orders:read", "refunds:write"))
    pair = await oauth.client_credentials(service, None)
    await clients.update(UpdateClient(actor=OPERATOR, client_id=service.id, scopes=("orders:read",)))
    assert (await auth.authenticate(pair.access_token, None)).scopes == {"orders:read"}
    await clients.update(
        UpdateClient(actor=OPERATOR, client_id=service.id, grant_types=(GrantType.AUTHORIZATION_CODE,))
    )
    with pytest.raises(TokenInvalid):
        await auth.authenticate(pair.access_token, None)


def test_a_client_acts_per_operation_never_as_the_widest_of_its_scopes() -> None:
    assert acting_role("orders:read") is Role.STAFF  # every order, as staff read them
    assert acting_role("refunds:write") is Role.STAFF
    assert acting_role("users:write") is Role.STAFF  # so changing accounts, an admin's work, is refused
    assert acting_role("audit:read") is Role.ADMIN

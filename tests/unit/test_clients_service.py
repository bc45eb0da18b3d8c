"""ClientService on the fakes: who may register and change clients, what is stored and
audited (never a secret), and client authentication for the token endpoint."""

from __future__ import annotations

import pytest

from core.domain.errors import (
    AuthenticationRequired,
    ClientIsPublic,
    InvalidClient,
    NotAllowed,
    OAuthClientNotFound,
    TokenInvalid,
    ValidationFailed,
)
from core.domain.oauth import ClientStatus, ClientType, GrantType, OAuthClient
from core.domain.pagination import PageRequest
from core.domain.users import Actor, Role, UserStatus
from core.ports.repositories import OAuthClientFilter
from core.services.auth import AuthService
from core.services.clients import ClientService, ListClients, RegisterClient, UpdateClient
from tests.fakes import FakeKeyedDigest, FakeOpaqueTokens, FixedClock, InMemoryDatabase, SequentialIds
from tests.unit.helpers import START, audit

CODE = GrantType.AUTHORIZATION_CODE
REFRESH = GrantType.REFRESH_TOKEN
CREDENTIALS = GrantType.CLIENT_CREDENTIALS
OPERATOR = Actor.operator()


@pytest.fixture
def clients(db: InMemoryDatabase, clock: FixedClock, ids: SequentialIds, auth: AuthService) -> ClientService:
    return ClientService(db, FakeOpaqueTokens(), FakeKeyedDigest(), clock, ids, auth)


def _register(actor: Actor, **overrides: object) -> RegisterClient:
    fields: dict[str, object] = {
        "actor": actor,
        "name": "Reports",
        "type": ClientType.CONFIDENTIAL,
        "redirect_uris": ("https://reports.example.com/cb",),
        "grant_types": (CODE, REFRESH),
        "scopes": ("orders:read", "catalog:read"),
    }
    fields.update(overrides)
    return RegisterClient(**fields)  # type: ignore[arg-type]


def _stored(db: InMemoryDatabase) -> list[OAuthClient]:
    return sorted(db.store.oauth_clients.values(), key=lambda c: c.id)


def _everything(db: InMemoryDatabase) -> tuple[object, ...]:
    return (dict(db.store.oauth_clients), dict(db.store.audit), db.commits)


# Registering.
async def test_an_admin_registers_a_confidential_client_and_is_shown_its_secret_once(
    clients: ClientService, db: InMemoryDatabase, admin_actor: Actor
) -> None:
    made = await clients.register(_register(admin_actor))

    client = made.client
    assert made.secret is not None and made.secret.startswith("tbcs_")
    assert len(made.secret) == len("tbcs_") + 43  # 32 random bytes, URL-safe base64
    assert client.id.startswith("cli_")
    assert (client.name, client.type, client.status) == ("Reports", ClientType.CONFIDENTIAL, ClientStatus.ACTIVE)
    assert client.scopes == ("catalog:read", "orders:read")
    assert (client.created_by, client.created_at, client.secret_rotated_at) == ("usr_admin", START, START)
    assert _stored(db) == [client]
    # Only a keyed digest of the secret is kept, nowhere the secret.
    assert client.secret_digest is not None and made.secret not in repr(db.store)
    assert made.secret not in repr(made)
    assert [(e.action, e.actor_id, e.object_type, e.object_id, e.source_ip, e.details) for e in audit(db)] == [
        (
            "oauth_client.registered",
            "usr_admin",
            "oauth_client",
            client.id,
            "10.0.0.3",
            {
                "name": "Reports",
                "type": "confidential",
                "redirect_uris": ["https://reports.example.com/cb"],
                "grant_types": ["authorization_code", "refresh_token"],
                "scopes": ["catalog:read", "orders:read"],
            },
        )
    ]


async def test_two_clients_get_different_secrets(clients: ClientService, admin_actor: Actor) -> None:
    first = await clients.register(_register(admin_actor))
    second = await clients.register(_register(admin_actor))
    assert first.secret != second.secret
    assert first.client.secret_digest != second.client.secret_digest


async def test_a_public_client_has_no_secret(clients: ClientService, db: InMemoryDatabase) -> None:
    made = await clients.register(_register(OPERATOR, type=ClientType.PUBLIC, grant_types=(CODE,)))
    assert (made.secret, made.client.secret_digest, made.client.secret_rotated_at) == (None, None, None)
    assert made.client.created_by is None  # the operator
    assert [(e.action, e.actor_id, e.source_ip) for e in audit(db)] == [("oauth_client.registered", None, "cli")]


@pytest.mark.parametrize("who", ["staff", "customer"])
async def test_only_admins_and_the_operator_manage_clients(
    clients: ClientService, db: InMemoryDatabase, admin_actor: Actor, who: str, request: pytest.FixtureRequest
) -> None:
    made = await clients.register(_register(admin_actor))
    actor: Actor = request.getfixturevalue(who)
    before = _everything(db)

    attempts = [
        clients.register(_register(actor)),
        clients.list_clients(ListClients(actor=actor)),
        clients.get_client(actor, made.client.id),
        clients.update(UpdateClient(actor=actor, client_id=made.client.id, name="Mine")),
        clients.disable(actor, made.client.id),
        clients.enable(actor, made.client.id),
        clients.rotate_secret(actor, made.client.id),
    ]
    for attempt in attempts:
        with pytest.raises(NotAllowed) as caught:
            await attempt
        assert caught.value.code == "forbidden"
    assert _everything(db) == before


async def test_anonymous_callers_are_asked_to_sign_in(clients: ClientService, anonymous: Actor) -> None:
    with pytest.raises(AuthenticationRequired):
        await clients.register(_register(anonymous))
    with pytest.raises(AuthenticationRequired):
        await clients.list_clients(ListClients(actor=anonymous))


async def test_an_admin_demoted_or_disabled_meanwhile_is_refused(
    clients: ClientService, db: InMemoryDatabase, admin_actor: Actor
) -> None:
    made = await clients.register(_register(admin_actor))
    db.store.users["usr_admin"].role = Role.STAFF
    with pytest.raises(NotAllowed):
        await clients.rotate_secret(admin_actor, made.client.id)
    db.store.users["usr_admin"].role = Role.ADMIN
    db.store.users["usr_admin"].status = UserStatus.DISABLED
    with pytest.raises(TokenInvalid):
        await clients.register(_register(admin_actor))
    assert len(_stored(db)) == 1


async def test_a_bad_registration_names_every_field_and_writes_nothing(
    clients: ClientService, db: InMemoryDatabase, admin_actor: Actor
) -> None:
    before = _everything(db)
    with pytest.raises(ValidationFailed) as caught:
        await clients.register(
            _register(
                admin_actor,
                type=ClientType.PUBLIC,
                name="\tReports\x07",
                redirect_uris=("https://a.example/cb#frag", "https://*.example/cb"),
                grant_types=(CODE, CREDENTIALS),
                scopes=("orders:read", "orders:everything"),
            )
        )
    assert caught.value.details == {
        "fields": {
            "name": "cannot contain control characters",
            "redirect_uris[0]": "must not have a fragment (#...)",
            "redirect_uris[1]": "must not have wildcards (*): it is compared exactly",
            "grant_types": "client_credentials is only for confidential clients",
            "scopes": "has unknown scopes: orders:everything",
        }
    }
    assert _everything(db) == before


# Reading.
async def test_list_pages_and_filters_by_status(clients: ClientService, admin_actor: Actor) -> None:
    made = [(await clients.register(_register(admin_actor, name=f"App {n}"))).client for n in range(3)]
    await clients.disable(admin_actor, made[1].id)

    first = await clients.list_clients(ListClients(actor=admin_actor, page=PageRequest(limit=2)))
    second = await clients.list_clients(
        ListClients(actor=admin_actor, page=PageRequest(limit=2, after=first.next_after))
    )
    disabled = await clients.list_clients(
        ListClients(actor=admin_actor, filter=OAuthClientFilter(status=ClientStatus.DISABLED))
    )

    assert [c.name for c in first.items] == ["App 0", "App 1"]
    assert ([c.name for c in second.items], second.next_after) == (["App 2"], None)
    assert [c.id for c in disabled.items] == [made[1].id]


async def test_get_and_an_unknown_client(clients: ClientService, admin_actor: Actor) -> None:
    made = await clients.register(_register(admin_actor))
    assert await clients.get_client(admin_actor, made.client.id) == made.client
    with pytest.raises(OAuthClientNotFound) as caught:
        await clients.get_client(admin_actor, "cli_nobody")
    assert (caught.value.code, caught.value.details) == ("oauth_client_not_found", {"client_id": "cli_nobody"})


# Changing.
async def test_update_changes_the_fields_given_and_audits_each_change(
    clients: ClientService, db: InMemoryDatabase, clock: FixedClock, admin_actor: Actor
) -> None:
    made = await clients.register(_register(admin_actor))
    clock.advance(minutes=3)

    client = await clients.update(
        UpdateClient(
            actor=admin_actor,
            client_id=made.client.id,
            name="Reports v2",
            redirect_uris=("https://reports.example.com/cb", "http://localhost:9000/cb"),
            scopes=("catalog:read", "orders:read"),  # the same: not a change
            status=ClientStatus.DISABLED,
        )
    )

    assert (client.name, client.status, client.updated_at) == ("Reports v2", ClientStatus.DISABLED, clock.now())
    assert _stored(db) == [client]
    assert client.secret_digest == made.client.secret_digest
    assert [(e.action, e.details) for e in audit(db)[1:]] == [
        (
            "oauth_client.updated",
            {
                "name": {"before": "Reports", "after": "Reports v2"},
                "redirect_uris": {
                    "before": ["https://reports.example.com/cb"],
                    "after": ["https://reports.example.com/cb", "http://localhost:9000/cb"],
                },
            },
        ),
        ("oauth_client.disabled", {}),
    ]


async def test_an_update_that_changes_nothing_writes_nothing(
    clients: ClientService, db: InMemoryDatabase, admin_actor: Actor
) -> None:
    made = await clients.register(_register(admin_actor))
    before = _everything(db)

    same = await clients.update(
        UpdateClient(actor=admin_actor, client_id=made.client.id, name=" Reports ", status=ClientStatus.ACTIVE)
    )
    assert same == made.client
    assert _everything(db) == before
    assert (await clients.enable(admin_actor, made.client.id)) == made.client
    assert _everything(db) == before


async def test_a_bad_update_changes_nothing(clients: ClientService, db: InMemoryDatabase, admin_actor: Actor) -> None:
    made = await clients.register(_register(admin_actor))
    before = _everything(db)

    with pytest.raises(ValidationFailed) as caught:
        await clients.update(
            UpdateClient(
                actor=admin_actor,
                client_id=made.client.id,
                name="Fine",
                grant_types=(REFRESH,),
                status=ClientStatus.DISABLED,
            )
        )
    assert caught.value.details == {"fields": {"grant_types": "refresh_token needs authorization_code"}}
    with pytest.raises(OAuthClientNotFound):
        await clients.update(UpdateClient(actor=admin_actor, client_id="cli_nobody", name="x"))
    with pytest.raises(OAuthClientNotFound):
        await clients.disable(admin_actor, "cli_nobody")
    assert _everything(db) == before


async def test_disable_and_enable_are_audited_once_each(
    clients: ClientService, db: InMemoryDatabase, admin_actor: Actor
) -> None:
    made = await clients.register(_register(admin_actor))

    assert (await clients.disable(admin_actor, made.client.id)).status is ClientStatus.DISABLED
    assert (await clients.disable(admin_actor, made.client.id)).status is ClientStatus.DISABLED
    assert (await clients.enable(OPERATOR, made.client.id)).status is ClientStatus.ACTIVE

    assert [(e.action, e.actor_id) for e in audit(db)] == [
        ("oauth_client.registered", "usr_admin"),
        ("oauth_client.disabled", "usr_admin"),
        ("oauth_client.enabled", None),
    ]


# Secrets.
async def test_rotating_gives_a_new_secret_and_the_old_one_stops_working_at_once(
    clients: ClientService, db: InMemoryDatabase, clock: FixedClock, admin_actor: Actor
) -> None:
    made = await clients.register(_register(admin_actor))
    assert made.secret is not None
    clock.advance(days=1)

    rotated = await clients.rotate_secret(admin_actor, made.client.id)

    assert rotated.secret is not None and rotated.secret.startswith("tbcs_") and rotated.secret != made.secret
    assert rotated.client.secret_rotated_at == clock.now()
    assert await clients.authenticate(made.client.id, rotated.secret) == rotated.client
    with pytest.raises(InvalidClient):
        await clients.authenticate(made.client.id, made.secret)
    assert rotated.secret not in repr(db.store) and made.secret not in repr(db.store)
    assert [(e.action, e.details) for e in audit(db)][-1] == ("oauth_client.secret_rotated", {})


async def test_a_public_client_cannot_rotate_a_secret(
    clients: ClientService, db: InMemoryDatabase, admin_actor: Actor
) -> None:
    made = await clients.register(_register(admin_actor, type=ClientType.PUBLIC, grant_types=(CODE,)))
    before = _everything(db)
    with pytest.raises(ClientIsPublic) as caught:
        await clients.rotate_secret(admin_actor, made.client.id)
    assert caught.value.code == "client_is_public"
    with pytest.raises(OAuthClientNotFound):
        await clients.rotate_secret(admin_actor, "cli_nobody")
    assert _everything(db) == before


# Authentication (the token endpoint).
async def test_a_confidential_client_authenticates_with_its_secret(clients: ClientService, admin_actor: Actor) -> None:
    made = await clients.register(_register(admin_actor))
    assert made.secret is not None
    assert await clients.authenticate(made.client.id, made.secret) == made.client


async def test_a_public_client_authenticates_with_its_id_alone(clients: ClientService, admin_actor: Actor) -> None:
    made = await clients.register(_register(admin_actor, type=ClientType.PUBLIC, grant_types=(CODE,)))
    assert await clients.authenticate(made.client.id, None) == made.client


async def test_every_failed_authentication_is_one_invalid_client(
    clients: ClientService, db: InMemoryDatabase, admin_actor: Actor
) -> None:
    confidential = await clients.register(_register(admin_actor))
    public = (await clients.register(_register(admin_actor, type=ClientType.PUBLIC, grant_types=(CODE,)))).client
    disabled = await clients.register(_register(admin_actor, name="Old"))
    await clients.disable(admin_actor, disabled.client.id)
    assert confidential.secret is not None and disabled.secret is not None
    before = _everything(db)

    attempts = [
        ("cli_nobody", confidential.secret),  # unknown client
        ("cli_nobody", None),
        (confidential.client.id, confidential.secret + "x"),  # wrong secret
        (confidential.client.id, ""),
        (confidential.client.id, None),  # no secret
        (confidential.client.id, disabled.secret),  # another client's secret
        (disabled.client.id, disabled.secret),  # disabled
        (public.id, "anything"),  # a public client sending a secret
        (public.id, ""),
    ]
    answers = []
    for client_id, secret in attempts:
        with pytest.raises(InvalidClient) as caught:
            await clients.authenticate(client_id, secret)
        answers.append((type(caught.value), caught.value.code, caught.value.message, caught.value.details))
    assert answers == [(InvalidClient, "invalid_client", "Client authentication failed.", {})] * len(attempts)
    assert _everything(db) == before


async def test_find_returns_a_client_whatever_its_status(clients: ClientService, admin_actor: Actor) -> None:
    made = await clients.register(_register(admin_actor))
    await clients.disable(admin_actor, made.client.id)
    found = await clients.find(made.client.id)
    assert found is not None and found.status is ClientStatus.DISABLED
    assert await clients.find("cli_nobody") is None
    assert found == await clients.get_client(admin_actor, made.client.id)

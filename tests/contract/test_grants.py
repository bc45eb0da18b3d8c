"""AuthorizationCodeRepository, ConsentRepository and the OAuth clients' sessions of the
RefreshTokenRepository: every adapter behaves the same (see core/ports/repositories.py)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import attrs
import pytest

from adapters.postgres import PostgresDatabase
from adapters.sqlite import SqliteDatabase
from adapters.sqlite.connection import connect
from core.domain.grants import CODE_TTL, AuthorizationCode, Consent
from core.domain.oauth import OAuthClient
from core.domain.users import RefreshToken, User
from core.ports.unit_of_work import UnitOfWorkFactory
from tests.contract.builders import START, Make, store
from tests.fakes import FixedClock, InMemoryDatabase

CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"  # RFC 7636 appendix B: 43 characters


@pytest.fixture
async def ada(uow_factory: UnitOfWorkFactory, make: Make) -> User:
    user = make.user("ada@example.com")
    await store(uow_factory, user)
    return user


@pytest.fixture
async def bob(uow_factory: UnitOfWorkFactory, make: Make) -> User:
    user = make.user("bob@example.com")
    await store(uow_factory, user)
    return user


@pytest.fixture
async def app(uow_factory: UnitOfWorkFactory, make: Make) -> OAuthClient:
    client = make.oauth_client("Shop app")
    await store(uow_factory, client)
    return client


@pytest.fixture
async def other_app(uow_factory: UnitOfWorkFactory, make: Make) -> OAuthClient:
    client = make.oauth_client("Other app")
    await store(uow_factory, client)
    return client


def _code(make: Make, client: OAuthClient, user: User, digest: str, scope: str = "catalog:read") -> AuthorizationCode:
    now = make.clock.now()
    return AuthorizationCode(
        id=make.ids.new("acd"),
        code_digest=digest,
        client_id=client.id,
        user_id=user.id,
        redirect_uri="https://app.example.com/callback",
        scope=scope,
        code_challenge=CHALLENGE,
        created_at=now,
        expires_at=now + CODE_TTL,
    )


def _client_token(make: Make, client: OAuthClient, user: User, family_id: str, digest: str) -> RefreshToken:
    return attrs.evolve(make.refresh_token(user, family_id, digest), client_id=client.id, scope="catalog:read")


def _consent(user: User, client: OAuthClient, scope: str, make: Make) -> Consent:
    now = make.clock.now()
    return Consent(user_id=user.id, client_id=client.id, scope=scope, granted_at=now, updated_at=now)


async def _add_codes(uow_factory: UnitOfWorkFactory, *codes: AuthorizationCode) -> None:
    async with uow_factory() as uow:
        for code in codes:
            await uow.authorization_codes.add(code)
        await uow.commit()


async def _code_by_digest(uow_factory: UnitOfWorkFactory, digest: str) -> AuthorizationCode | None:
    async with uow_factory(readonly=True) as uow:
        return await uow.authorization_codes.get_by_digest(digest)


async def _put_consents(uow_factory: UnitOfWorkFactory, *consents: Consent) -> None:
    async with uow_factory() as uow:
        for consent in consents:
            await uow.consents.put(consent)
        await uow.commit()


async def _token_by_digest(uow_factory: UnitOfWorkFactory, digest: str) -> RefreshToken | None:
    async with uow_factory(readonly=True) as uow:
        return await uow.refresh_tokens.get_by_digest(digest)


# Authorization codes.
async def test_a_code_reads_back_exactly_by_its_digest(
    uow_factory: UnitOfWorkFactory, make: Make, ada: User, app: OAuthClient
) -> None:
    code = _code(make, app, ada, "code-digest-1", scope="catalog:read orders:read")
    await _add_codes(uow_factory, code)

    assert await _code_by_digest(uow_factory, "code-digest-1") == AuthorizationCode(
        id=code.id,
        code_digest="code-digest-1",
        client_id=app.id,
        user_id=ada.id,
        redirect_uri="https://app.example.com/callback",
        scope="catalog:read orders:read",
        code_challenge=CHALLENGE,
        created_at=START,
        expires_at=START + timedelta(minutes=5),
        used_at=None,
        family_id=None,
    )
    assert await _code_by_digest(uow_factory, "code-digest-2") is None
    assert await _code_by_digest(uow_factory, "") is None


async def test_a_code_is_marked_used_once_with_the_session_it_began(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock, ada: User, app: OAuthClient
) -> None:
    code = _code(make, app, ada, "d1")
    untouched = _code(make, app, ada, "d2")
    await _add_codes(uow_factory, code, untouched)
    used_at = clock.now() + timedelta(seconds=3)

    async with uow_factory() as uow:
        assert await uow.authorization_codes.mark_used(code.id, used_at, "fam_1") is True
        # A replay: neither the time nor the session is overwritten.
        assert await uow.authorization_codes.mark_used(code.id, used_at + timedelta(seconds=1), "fam_2") is False
        assert await uow.authorization_codes.mark_used("acd_unknown", used_at, "fam_3") is False
        await uow.commit()

    stored = await _code_by_digest(uow_factory, "d1")
    assert stored == attrs.evolve(code, used_at=used_at, family_id="fam_1")
    assert await _code_by_digest(uow_factory, "d2") == untouched
    async with uow_factory() as uow:  # in a later unit, too
        assert await uow.authorization_codes.mark_used(code.id, used_at, "fam_4") is False
        await uow.commit()
    assert await _code_by_digest(uow_factory, "d1") == stored


async def test_codes_expired_before_a_time_are_purged_oldest_first_in_batches(
    uow_factory: UnitOfWorkFactory, make: Make, ada: User, app: OAuthClient
) -> None:
    codes = [attrs.evolve(_code(make, app, ada, f"p{n}"), expires_at=START + timedelta(minutes=n)) for n in range(1, 6)]
    await _add_codes(uow_factory, *codes)
    async with uow_factory() as uow:
        assert await uow.authorization_codes.purge(START + timedelta(minutes=4), 2) == 2  # p1, p2
        await uow.commit()
    async with uow_factory() as uow:
        assert await uow.authorization_codes.purge(START + timedelta(minutes=4), 2) == 1  # p3; p4 is not before
        await uow.commit()
    kept = [n for n in range(1, 6) if await _code_by_digest(uow_factory, f"p{n}") is not None]
    assert kept == [4, 5]


async def test_a_use_rolled_back_leaves_the_code_unused(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock, ada: User, app: OAuthClient
) -> None:
    code = _code(make, app, ada, "d1")
    await _add_codes(uow_factory, code)

    async with uow_factory() as uow:
        assert await uow.authorization_codes.mark_used(code.id, clock.now(), "fam_1") is True
        # no commit: the exchange failed after it (say, the session could not be made)

    assert await _code_by_digest(uow_factory, "d1") == code
    async with uow_factory() as uow:
        assert await uow.authorization_codes.mark_used(code.id, clock.now(), "fam_2") is True
        await uow.commit()
    stored = await _code_by_digest(uow_factory, "d1")
    assert stored is not None and stored.family_id == "fam_2"


async def test_of_concurrent_exchanges_of_a_code_exactly_one_wins(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock, ada: User, app: OAuthClient
) -> None:
    code = _code(make, app, ada, "d1")
    await _add_codes(uow_factory, code)
    contenders = 5
    # PostgreSQL runs the units at once: each reads the code unused before any marks it, as
    # exchanges racing each other do. SQLite and the fake serialize writing units, so there
    # they queue instead (a barrier would wait for units that cannot start).
    together = asyncio.Barrier(contenders) if isinstance(uow_factory, PostgresDatabase) else None

    async def exchange(n: int) -> bool:
        async with uow_factory() as uow:
            read = await uow.authorization_codes.get_by_digest("d1")
            assert read is not None
            if together is not None:
                assert read.used_at is None
                await together.wait()
            won = await uow.authorization_codes.mark_used(code.id, clock.now(), f"fam_{n}")
            await uow.commit()
            return won

    outcomes = await asyncio.wait_for(asyncio.gather(*(exchange(n) for n in range(contenders))), timeout=30)

    assert sorted(outcomes) == [False] * (contenders - 1) + [True]
    stored = await _code_by_digest(uow_factory, "d1")
    assert stored is not None
    assert (stored.used_at, stored.family_id) == (clock.now(), f"fam_{outcomes.index(True)}")


# Consents.
async def test_a_consent_is_put_read_replaced_and_deleted(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock, ada: User, bob: User, app: OAuthClient
) -> None:
    first = _consent(ada, app, "catalog:read", make)
    bobs = _consent(bob, app, "orders:read", make)
    await _put_consents(uow_factory, first, bobs)

    async with uow_factory(readonly=True) as uow:
        assert await uow.consents.get(ada.id, app.id) == Consent(
            user_id=ada.id, client_id=app.id, scope="catalog:read", granted_at=START, updated_at=START
        )
        assert await uow.consents.get(ada.id, "cli_unknown") is None
        assert await uow.consents.get("usr_unknown", app.id) is None

    clock.advance(minutes=10)
    wider = Consent(
        user_id=ada.id, client_id=app.id, scope="catalog:read orders:read", granted_at=START, updated_at=clock.now()
    )
    await _put_consents(uow_factory, wider)
    async with uow_factory(readonly=True) as uow:
        assert await uow.consents.get(ada.id, app.id) == wider
        assert await uow.consents.get(bob.id, app.id) == bobs  # another user's is not touched

    async with uow_factory() as uow:
        assert await uow.consents.delete(ada.id, app.id) is True
        assert await uow.consents.delete(ada.id, app.id) is False
        assert await uow.consents.delete(ada.id, "cli_unknown") is False
        assert await uow.consents.delete("usr_unknown", app.id) is False
        await uow.commit()
    async with uow_factory(readonly=True) as uow:
        assert await uow.consents.get(ada.id, app.id) is None
        assert await uow.consents.list_for_user(ada.id) == []
        assert await uow.consents.get(bob.id, app.id) == bobs


async def test_a_users_consents_are_listed_by_client_id(
    uow_factory: UnitOfWorkFactory, make: Make, ada: User, bob: User
) -> None:
    clients = [make.oauth_client(f"App {n}") for n in range(3)]
    await store(uow_factory, *clients)
    # Put in an order that is not the ids'.
    mine = [_consent(ada, clients[n], f"scope-{n}", make) for n in (2, 0, 1)]
    await _put_consents(uow_factory, *mine, _consent(bob, clients[1], "bobs", make))

    async with uow_factory(readonly=True) as uow:
        listed = await uow.consents.list_for_user(ada.id)
        assert await uow.consents.list_for_user("usr_unknown") == []
    assert [c.client_id for c in listed] == [c.id for c in clients]
    assert [c.scope for c in listed] == ["scope-0", "scope-1", "scope-2"]
    assert all(c.user_id == ada.id for c in listed)


async def test_a_consent_not_committed_is_not_kept(
    uow_factory: UnitOfWorkFactory, make: Make, ada: User, app: OAuthClient
) -> None:
    kept = _consent(ada, app, "catalog:read", make)
    await _put_consents(uow_factory, kept)

    async with uow_factory() as uow:
        await uow.consents.put(attrs.evolve(kept, scope="catalog:read orders:read"))
        assert await uow.consents.delete(ada.id, app.id) is True
        assert await uow.consents.get(ada.id, app.id) is None  # the unit sees its own writes
    async with uow_factory(readonly=True) as uow:
        assert await uow.consents.get(ada.id, app.id) == kept


# The sessions of OAuth clients (refresh tokens marked with their client).
async def test_a_token_keeps_its_client_and_scopes_and_a_first_party_one_has_none(
    uow_factory: UnitOfWorkFactory, make: Make, ada: User, app: OAuthClient
) -> None:
    first_party = make.refresh_token(ada, "fam_1", "d1")
    clients = attrs.evolve(make.refresh_token(ada, "fam_2", "d2"), client_id=app.id, scope="catalog:read orders:read")
    await store(uow_factory, first_party, clients)

    stored_first_party = await _token_by_digest(uow_factory, "d1")
    stored_clients = await _token_by_digest(uow_factory, "d2")
    assert stored_first_party == first_party
    assert stored_first_party is not None
    assert (stored_first_party.client_id, stored_first_party.scope) == (None, None)
    assert stored_clients == clients
    assert stored_clients is not None
    assert (stored_clients.client_id, stored_clients.scope) == (app.id, "catalog:read orders:read")


async def test_a_clients_sessions_since_a_time_by_user_and_for_all(
    uow_factory: UnitOfWorkFactory,
    make: Make,
    clock: FixedClock,
    ada: User,
    bob: User,
    app: OAuthClient,
    other_app: OAuthClient,
) -> None:
    old = _client_token(make, app, ada, "fam_a_old", "d1")
    clock.advance(minutes=10)
    since = clock.now()
    rotated = [_client_token(make, app, ada, "fam_a_new", f"d{n}") for n in (2, 3)]  # one session, two tokens
    bobs = _client_token(make, app, bob, "fam_b", "d4")
    first_party = make.refresh_token(ada, "fam_own", "d5")
    others = _client_token(make, other_app, ada, "fam_other", "d6")
    await store(uow_factory, old, *rotated, bobs, first_party, others)

    async with uow_factory(readonly=True) as uow:
        tokens = uow.refresh_tokens
        assert await tokens.client_families_since(app.id, ada.id, since) == ["fam_a_new"]
        assert await tokens.client_families_since(app.id, ada.id, since - timedelta(minutes=10)) == [
            "fam_a_new",
            "fam_a_old",
        ]
        assert await tokens.client_families_since(app.id, None, since) == ["fam_a_new", "fam_b"]
        assert await tokens.client_families_since(app.id, None, START) == ["fam_a_new", "fam_a_old", "fam_b"]
        assert await tokens.client_families_since(app.id, bob.id, since) == ["fam_b"]
        assert await tokens.client_families_since(other_app.id, None, START) == ["fam_other"]
        assert await tokens.client_families_since(app.id, ada.id, since + timedelta(microseconds=1)) == []
        assert await tokens.client_families_since("cli_unknown", None, START) == []
        assert await tokens.client_families_since(app.id, "usr_unknown", START) == []
        # A user's own sessions are all of theirs, the clients' too.
        assert await tokens.families_since(ada.id, since) == ["fam_a_new", "fam_other", "fam_own"]


async def test_revoking_a_client_for_one_user_or_all_counts_and_touches_only_its_tokens(
    uow_factory: UnitOfWorkFactory,
    make: Make,
    clock: FixedClock,
    ada: User,
    bob: User,
    app: OAuthClient,
    other_app: OAuthClient,
) -> None:
    ada_1 = _client_token(make, app, ada, "fam_1", "d1")
    ada_2 = _client_token(make, app, ada, "fam_1", "d2")
    ada_3 = _client_token(make, app, ada, "fam_2", "d3")
    bob_1 = _client_token(make, app, bob, "fam_3", "d4")
    bob_2 = _client_token(make, app, bob, "fam_4", "d5")
    first_party = make.refresh_token(ada, "fam_5", "d6")
    others = _client_token(make, other_app, ada, "fam_6", "d7")
    await store(uow_factory, ada_1, ada_2, ada_3, bob_1, bob_2, first_party, others)
    earlier = clock.now()

    async with uow_factory() as uow:
        assert await uow.refresh_tokens.revoke_family("fam_2", earlier) == 1  # already revoked: not counted again
        assert await uow.refresh_tokens.revoke_client(app.id, ada.id, earlier) == 2
        assert await uow.refresh_tokens.revoke_client(app.id, ada.id, earlier) == 0
        assert await uow.refresh_tokens.revoke_client(app.id, "usr_unknown", earlier) == 0
        await uow.commit()
    revoked = {
        d: t.revoked_at
        for d in ("d1", "d2", "d3", "d4", "d5", "d6", "d7")
        if (t := await _token_by_digest(uow_factory, d))
    }
    assert revoked == {"d1": earlier, "d2": earlier, "d3": earlier, "d4": None, "d5": None, "d6": None, "d7": None}

    clock.advance(minutes=1)
    async with uow_factory() as uow:
        assert await uow.refresh_tokens.mark_used(bob_1.id, clock.now()) is True  # used, not revoked: still counts
        assert await uow.refresh_tokens.revoke_client(app.id, None, clock.now()) == 2
        assert await uow.refresh_tokens.revoke_client(app.id, None, clock.now()) == 0
        assert await uow.refresh_tokens.revoke_client("cli_unknown", None, clock.now()) == 0
        await uow.commit()
    revoked = {
        d: t.revoked_at
        for d in ("d1", "d2", "d3", "d4", "d5", "d6", "d7")
        if (t := await _token_by_digest(uow_factory, d))
    }
    assert revoked == {
        "d1": earlier,  # not re-stamped
        "d2": earlier,
        "d3": earlier,
        "d4": clock.now(),
        "d5": clock.now(),
        "d6": None,  # the first-party session
        "d7": None,  # another client's
    }
    assert await _token_by_digest(uow_factory, "d6") == first_party
    assert await _token_by_digest(uow_factory, "d7") == others


async def test_a_revocation_not_committed_is_not_kept(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock, ada: User, app: OAuthClient
) -> None:
    token = _client_token(make, app, ada, "fam_1", "d1")
    await store(uow_factory, token)

    async with uow_factory() as uow:
        assert await uow.refresh_tokens.revoke_client(app.id, None, clock.now()) == 1
    assert await _token_by_digest(uow_factory, "d1") == token


# What goes with a user or a client deleted. The ports delete neither: this is the schema's
# promise to an operator deleting one by hand, so only the stores with a schema keep it.
async def _delete(uow_factory: UnitOfWorkFactory, table: str, row_id: str) -> None:
    if isinstance(uow_factory, InMemoryDatabase):
        pytest.skip("the fake has no schema, and no port deletes users or clients")
    sql = f"DELETE FROM {table} WHERE id = "  # the table is one of the two the tests below name
    if isinstance(uow_factory, SqliteDatabase):
        raw = connect(uow_factory.path, busy_timeout_ms=1000)
        try:
            assert raw.execute(sql + "?", (row_id,)).rowcount == 1
        finally:
            raw.close()
    else:
        assert isinstance(uow_factory, PostgresDatabase)
        conn = await asyncpg.connect(uow_factory.url, timeout=5)
        try:
            assert await conn.execute(sql + "$1", row_id) == "DELETE 1"
        finally:
            await conn.close()


async def _grants_of(uow_factory: UnitOfWorkFactory, user: User) -> tuple[list[str], list[str]]:
    async with uow_factory(readonly=True) as uow:
        consents = [c.client_id for c in await uow.consents.list_for_user(user.id)]
        families = await uow.refresh_tokens.families_since(user.id, START)
    return consents, families


async def test_a_deleted_user_takes_their_codes_and_consents_along(
    uow_factory: UnitOfWorkFactory, make: Make, ada: User, bob: User, app: OAuthClient
) -> None:
    await _add_codes(uow_factory, _code(make, app, ada, "ada-code"), _code(make, app, bob, "bob-code"))
    await _put_consents(uow_factory, _consent(ada, app, "catalog:read", make), _consent(bob, app, "catalog:read", make))
    await store(uow_factory, _client_token(make, app, ada, "fam_1", "d1"))

    await _delete(uow_factory, "users", ada.id)

    assert await _code_by_digest(uow_factory, "ada-code") is None
    assert await _token_by_digest(uow_factory, "d1") is None
    assert await _grants_of(uow_factory, ada) == ([], [])
    assert await _code_by_digest(uow_factory, "bob-code") is not None
    assert await _grants_of(uow_factory, bob) == ([app.id], [])


async def test_a_deleted_client_takes_its_codes_consents_and_sessions_along(
    uow_factory: UnitOfWorkFactory, make: Make, ada: User, app: OAuthClient, other_app: OAuthClient
) -> None:
    await _add_codes(uow_factory, _code(make, app, ada, "app-code"), _code(make, other_app, ada, "other-code"))
    await _put_consents(
        uow_factory, _consent(ada, app, "catalog:read", make), _consent(ada, other_app, "catalog:read", make)
    )
    first_party = make.refresh_token(ada, "fam_own", "d1")
    await store(uow_factory, _client_token(make, app, ada, "fam_app", "d2"), first_party)

    await _delete(uow_factory, "oauth_clients", app.id)

    assert await _code_by_digest(uow_factory, "app-code") is None
    assert await _code_by_digest(uow_factory, "other-code") is not None
    assert await _token_by_digest(uow_factory, "d2") is None
    assert await _token_by_digest(uow_factory, "d1") == first_party
    assert await _grants_of(uow_factory, ada) == ([other_app.id], ["fam_own"])

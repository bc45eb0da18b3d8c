"""The registry of OAuth clients: what admins (and the operator) register, change, disable
and give new secrets; and what the authorization server asks of it (a client by id, a
client's credentials checked).

Secrets are Tillbox's to make: ``tbcs_`` and 256 random bits, URL-safe. The plain secret is
returned once, by the use case that made it (``register``, ``rotate_secret``), and never
kept: the store holds only its keyed digest (KeyedDigest: HMAC under the server's key, so a
copy of the database alone cannot test guesses), and ``authenticate`` compares digests in
constant time. No secret or digest is written to the audit log.

Every change is audited (object type ``oauth_client``): ``oauth_client.registered``,
``.updated`` (each changed field's before and after), ``.disabled``, ``.enabled`` and
``.secret_rotated``. Admin use cases check the acting admin in the transaction of the change.
"""

from __future__ import annotations

import hmac
from datetime import datetime
from typing import Any

import attrs

from core.domain.errors import AuthenticationRequired, InvalidClient, OAuthClientNotFound
from core.domain.oauth import CLIENT_SECRET_PREFIX, ClientStatus, ClientType, GrantType, OAuthClient
from core.domain.pagination import Page, PageRequest
from core.domain.users import Actor
from core.ports.clock import Clock, IdGenerator
from core.ports.identity import KeyedDigest, OpaqueTokens
from core.ports.repositories import OAuthClientFilter
from core.ports.unit_of_work import UnitOfWork, UnitOfWorkFactory
from core.services.access import as_admin, current_actor_in
from core.services.audit import Auditor
from core.services.auth import AuthService

#: What a client secret's digest is keyed over, besides the secret: the server's one key
#: also digests idempotency fingerprints, and the two must never be comparable.
_SECRET_CONTEXT = b"tillbox oauth client secret\n"
#: Compared with when there is no digest to compare with: no digest is this.
_NO_DIGEST = "-" * 64


# Commands.
@attrs.frozen
class RegisterClient:
    actor: Actor
    name: str
    type: ClientType
    redirect_uris: tuple[str, ...]
    grant_types: tuple[GrantType, ...]
    scopes: tuple[str, ...]


@attrs.frozen
class ListClients:
    actor: Actor
    page: PageRequest = attrs.field(factory=PageRequest)
    filter: OAuthClientFilter = attrs.field(factory=OAuthClientFilter)


@attrs.frozen
class UpdateClient:
    """Fields left None stay as they are; ``status`` disables or enables the client."""

    actor: Actor
    client_id: str
    name: str | None = None
    redirect_uris: tuple[str, ...] | None = None
    grant_types: tuple[GrantType, ...] | None = None
    scopes: tuple[str, ...] | None = None
    status: ClientStatus | None = None


@attrs.frozen
class ClientWithSecret:
    """A client and its plain secret, which exists only here: shown once, never stored.
    ``secret`` is None for a public client (it has none)."""

    client: OAuthClient
    secret: str | None = attrs.field(repr=False)


class ClientService:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        opaque: OpaqueTokens,
        digests: KeyedDigest,
        clock: Clock,
        ids: IdGenerator,
        sessions: AuthService,
    ):
        self._uow = uow
        self._sessions = sessions  # whose sessions a client's tokens belong to
        self._opaque = opaque
        self._digests = digests
        self._clock = clock
        self._ids = ids
        self._auditor = Auditor(ids, clock)

    # Administration (admins and the operator).
    async def register(self, cmd: RegisterClient) -> ClientWithSecret:
        """A new, active client; ValidationFailed naming every wrong field (nothing written).
        A confidential client is given a secret, returned here and nowhere else."""
        secret = self._new_secret() if cmd.type is ClientType.CONFIDENTIAL else None
        now = self._clock.now()
        async with self._uow() as uow:
            actor = await self._admin_in(uow, cmd.actor)
            client = OAuthClient.register(
                id=self._ids.new("cli"),
                name=cmd.name,
                type=cmd.type,
                redirect_uris=cmd.redirect_uris,
                grant_types=cmd.grant_types,
                scopes=cmd.scopes,
                secret_digest=None if secret is None else self._digest(secret),
                at=now,
                created_by=actor.user_id,
            )
            await uow.oauth_clients.add(client)
            details = {
                "name": client.name,
                "type": client.type.value,
                "redirect_uris": list(client.redirect_uris),
                "grant_types": [g.value for g in client.grant_types],
                "scopes": list(client.scopes),
            }
            await self._audit(uow, actor, "oauth_client.registered", client.id, details)
            await uow.commit()
        return ClientWithSecret(client, secret)

    async def list_clients(self, cmd: ListClients) -> Page[OAuthClient]:
        """Oldest first (id ascending), optionally only those of one status."""
        await as_admin(self._uow, cmd.actor)
        async with self._uow(readonly=True) as uow:
            return await uow.oauth_clients.list(cmd.page, cmd.filter)

    async def get_client(self, actor: Actor, client_id: str) -> OAuthClient:
        """OAuthClientNotFound if there is none with this id."""
        await as_admin(self._uow, actor)
        async with self._uow(readonly=True) as uow:
            client = await uow.oauth_clients.get(client_id)
        if client is None:
            raise OAuthClientNotFound(client_id)
        return client

    async def update(self, cmd: UpdateClient) -> OAuthClient:
        """Change the fields given, all or none (ValidationFailed names every wrong field,
        and nothing is written); a change of ``status`` disables or enables the client.
        Audited as ``oauth_client.updated`` (the fields that changed, before and after),
        then ``.disabled`` or ``.enabled``; what changes nothing writes and audits nothing.
        The type of a client never changes: register another."""
        now = self._clock.now()
        async with self._uow() as uow:
            actor = await self._admin_in(uow, cmd.actor)
            client = await self._get_in(uow, cmd.client_id)
            changes = client.update(
                at=now, name=cmd.name, redirect_uris=cmd.redirect_uris, grant_types=cmd.grant_types, scopes=cmd.scopes
            )
            if changes:
                await self._audit(uow, actor, "oauth_client.updated", client.id, changes)
            status_changed = False
            if cmd.status is ClientStatus.DISABLED:
                status_changed = client.disable(at=now)
            elif cmd.status is ClientStatus.ACTIVE:
                status_changed = client.enable(at=now)
            if status_changed:
                action = "oauth_client.disabled" if cmd.status is ClientStatus.DISABLED else "oauth_client.enabled"
                await self._audit(uow, actor, action, client.id, {})
            # Disabled, or given fewer scopes: every session it has ends (its tokens are refused
            # from the commit on, on every instance within a second), in this transaction.
            narrowed = "scopes" in changes and not set(changes["scopes"]["before"]) <= set(client.scopes)
            ended: tuple[list[str], datetime] | None = None
            if (status_changed and not client.is_active) or narrowed:
                ended = await self._sessions.end_client_sessions_in(uow, client.id, None, now)
            if changes or status_changed:
                await uow.oauth_clients.update(client)
                await uow.commit()
        if ended is not None:
            self._sessions.sessions_ended(*ended)
        return client

    async def disable(self, actor: Actor, client_id: str) -> OAuthClient:
        """From now on its secret no longer authenticates it and no token is issued to it.
        A client disabled already stays as it is (nothing audited)."""
        return await self.update(UpdateClient(actor=actor, client_id=client_id, status=ClientStatus.DISABLED))

    async def enable(self, actor: Actor, client_id: str) -> OAuthClient:
        """An active client already stays as it is (nothing audited)."""
        return await self.update(UpdateClient(actor=actor, client_id=client_id, status=ClientStatus.ACTIVE))

    async def rotate_secret(self, actor: Actor, client_id: str) -> ClientWithSecret:
        """A new secret for a confidential client, returned once; the old one stops working
        at the commit (no overlap: hand the new one over before rotating, or expect the
        client to fail until it has it). ClientIsPublic (409) for a public client."""
        secret = self._new_secret()
        now = self._clock.now()
        async with self._uow() as uow:
            actor = await self._admin_in(uow, actor)
            client = await self._get_in(uow, client_id)
            client.rotate_secret(self._digest(secret), at=now)
            await uow.oauth_clients.update(client)
            await self._audit(uow, actor, "oauth_client.secret_rotated", client.id, {})
            await uow.commit()
        return ClientWithSecret(client, secret)

    # For the authorization server (no actor: the client is the caller).
    async def find(self, client_id: str) -> OAuthClient | None:
        """The client with this id, whatever its status, or None: for the authorization
        endpoint, which checks ``is_active``, ``allows_redirect_uri``, ``allows_grant`` and
        ``allows_scopes`` itself and decides what it may tell (it must never redirect to a
        URI the client did not register)."""
        async with self._uow(readonly=True) as uow:
            return await uow.oauth_clients.get(client_id)

    async def authenticate(self, client_id: str, secret: str | None) -> OAuthClient:
        """The client a token request comes from (RFC 6749 §2.3, §3.2.1).

        A confidential client proves itself with its secret; a public client sends only its
        id (``secret`` None), and its requests are bound by PKCE instead. Anything else, an
        unknown id, a wrong or missing secret, a disabled client, a public client sending a
        secret, is InvalidClient (``invalid_client``, 401), one answer that does not say
        which. The digests are compared in constant time, and an unknown id costs the same
        digest as a known one. The caller still checks the grant (``allows_grant``)."""
        client = await self.find(client_id)
        # The same work whatever the client: a digest made and compared, so that the time
        # of the answer does not tell which ids exist or which clients are public.
        presented = self._digest("" if secret is None else secret)
        expected = None if client is None else client.secret_digest
        matches = hmac.compare_digest(presented, _NO_DIGEST if expected is None else expected)
        if client is None or not client.is_active:
            raise InvalidClient()
        if client.is_confidential:
            if secret is None or expected is None or not matches:
                raise InvalidClient()
        elif secret is not None:
            raise InvalidClient()
        return client

    def secret_matches(self, client: OAuthClient, secret: str) -> bool:
        """Whether ``secret`` is the confidential client's, compared in constant time: for a
        protocol layer that authenticates a client it has already found (see ``authenticate``)."""
        presented = self._digest(secret)
        expected = client.secret_digest
        matches = hmac.compare_digest(presented, _NO_DIGEST if expected is None else expected)
        return client.is_confidential and expected is not None and matches

    # Helpers.
    def _new_secret(self) -> str:
        return CLIENT_SECRET_PREFIX + self._opaque.generate()

    def _digest(self, secret: str) -> str:
        return self._digests.digest(_SECRET_CONTEXT + secret.encode("utf-8", "surrogatepass"))

    async def _admin_in(self, uow: UnitOfWork, actor: Actor) -> Actor:
        # In the transaction of the change: an admin demoted or disabled meanwhile does not
        # get it through.
        if actor.user_id is None and not actor.is_operator:
            raise AuthenticationRequired()
        current = await current_actor_in(uow, actor)
        current.require_admin()
        return current

    async def _get_in(self, uow: UnitOfWork, client_id: str) -> OAuthClient:
        client = await uow.oauth_clients.get(client_id)
        if client is None:
            raise OAuthClientNotFound(client_id)
        return client

    async def _audit(self, uow: UnitOfWork, actor: Actor, action: str, client_id: str, details: dict[str, Any]) -> None:
        await self._auditor.record(uow, actor, action, "oauth_client", client_id, details)

"""What OAuth clients are given, and taken back: codes, consents, their sessions.

The protocol (RFC 6749 with PKCE, RFC 7009, RFC 7662) is spoken by authlib's server parts in
entrypoints/http/oauth.py; every decision about the store is made here: a code is single use
and bound to its client, redirect URI and challenge; a code that comes back a second time
ends the session its first use began; a user's consent is remembered per client and can be
taken back, which ends the client's sessions for that user. The sessions themselves are the
first-party ones (AuthService), marked with the client and the scopes granted.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import attrs

from core.domain.errors import NotFound, TokenInvalid
from core.domain.grants import CODE_TTL, AuthorizationCode, Consent
from core.domain.oauth import GrantType, OAuthClient
from core.domain.scopes import ROLE_SCOPES, format_scopes, role_for
from core.domain.users import Actor, Role, User
from core.ports.clock import Clock, IdGenerator
from core.ports.identity import OpaqueTokens
from core.ports.unit_of_work import UnitOfWork, UnitOfWorkFactory
from core.services.access import as_admin, signed_in
from core.services.audit import Auditor
from core.services.auth import AuthService, TokenPair

#: How long a code is kept after it expires (see ``purge_expired_codes``).
CODE_KEPT_AFTER_EXPIRY = timedelta(days=1)
_PURGE_BATCH = 500


class OAuthGrantInvalid(TokenInvalid):
    """A code or refresh token that is unknown, used, expired or another client's: RFC
    6749's ``invalid_grant``, one answer whichever it was."""

    code = "invalid_grant"

    def __init__(self) -> None:
        super().__init__("The code or refresh token is invalid, expired, revoked or was issued to another client.")


class AuthorizationNotFound(NotFound):
    code = "authorization_not_found"

    def __init__(self, client_id: str):
        super().__init__(f"No authorization of client {client_id}.", details={"client_id": client_id})


@attrs.frozen
class GrantCode:
    """The user approved (now, or before) what the client asked for."""

    user: User
    client: OAuthClient
    redirect_uri: str
    scopes: frozenset[str]
    code_challenge: str  # S256
    code: str  # the code to give, made by the protocol layer; only its digest is kept
    source_ip: str | None = None


@attrs.frozen
class Authorization:
    """A consent of the user, with the client it was given to (None if since deleted)."""

    consent: Consent
    client: OAuthClient | None


@attrs.frozen
class TokenInfo:
    """RFC 7662's answer for an active token."""

    kind: str  # RFC 7662 token_type_hint names: "access_token" or "refresh_token"
    client_id: str
    user_id: str
    scope: str
    expires_at: int
    issued_at: int | None


class OAuthService:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        auth: AuthService,
        opaque_tokens: OpaqueTokens,
        clock: Clock,
        ids: IdGenerator,
    ):
        self._uow = uow
        self._auth = auth
        self._opaque = opaque_tokens
        self._clock = clock
        self._ids = ids
        self._auditor = Auditor(ids, clock)

    # The authorization page.
    def grantable(self, user: User, client: OAuthClient, asked: Iterable[str]) -> frozenset[str]:
        """What the client may be given of what it asked: its own scopes, and no more than
        the user's role allows."""
        return frozenset(asked) & frozenset(client.scopes) & ROLE_SCOPES[user.role]

    async def active_user(self, user_id: str) -> User | None:
        """The account that signed in on the authorization page, if it may still sign in."""
        async with self._uow(readonly=True) as uow:
            user = await uow.users.get(user_id)
        return user if user is not None and user.is_active else None

    async def needs_consent(self, user: User, client: OAuthClient, scopes: frozenset[str]) -> bool:
        """False if the user approved these scopes (or more) for this client before."""
        async with self._uow(readonly=True) as uow:
            consent = await uow.consents.get(user.id, client.id)
        return consent is None or not scopes <= frozenset(consent.scope.split())

    async def grant_code(self, cmd: GrantCode) -> None:
        """Remember the consent (widened to these scopes) and keep the code's digest, bound
        to the client, the redirect URI and the challenge, for CODE_TTL."""
        now = self._clock.now()
        code = AuthorizationCode(
            id=self._ids.new("cod"),
            code_digest=self._opaque.digest(cmd.code),
            client_id=cmd.client.id,
            user_id=cmd.user.id,
            redirect_uri=cmd.redirect_uri,
            scope=format_scopes(cmd.scopes),
            code_challenge=cmd.code_challenge,
            created_at=now,
            expires_at=now + CODE_TTL,
        )
        you = Actor(user_id=cmd.user.id, role=cmd.user.role, source_ip=cmd.source_ip)
        async with self._uow() as uow:
            consent = await uow.consents.get(cmd.user.id, cmd.client.id)
            before = frozenset(consent.scope.split()) if consent is not None else frozenset()
            if not cmd.scopes <= before:
                granted = format_scopes(before | cmd.scopes)
                await uow.consents.put(
                    Consent(
                        user_id=cmd.user.id,
                        client_id=cmd.client.id,
                        scope=granted,
                        granted_at=consent.granted_at if consent is not None else now,
                        updated_at=now,
                    )
                )
                await self._audit(uow, you, "oauth.consent_granted", cmd.client.id, {"scope": granted})
            await uow.authorization_codes.add(code)
            await uow.commit()

    async def record_denial(self, user: User, client: OAuthClient, source_ip: str | None) -> None:
        async with self._uow() as uow:
            you = Actor(user_id=user.id, role=user.role, source_ip=source_ip)
            await self._audit(uow, you, "oauth.consent_denied", client.id, {})
            await uow.commit()

    # The token endpoint.
    async def find_code(self, code: str, client: OAuthClient) -> AuthorizationCode | None:
        """The code, if it is this client's and may still be exchanged. One that was used
        already is a replay: the session its first exchange began ends (RFC 6749 §4.1.2)."""
        now = self._clock.now()
        async with self._uow(readonly=True) as uow:
            record = await uow.authorization_codes.get_by_digest(self._opaque.digest(code))
        if record is None or record.client_id != client.id:
            return None
        if record.used_at is not None:
            await self._code_replayed(record, now)
            return None
        return record if record.is_usable(now) else None

    async def exchange_code(self, record: AuthorizationCode, client: OAuthClient) -> TokenPair:
        """Spend the code (checked by ``find_code`` and the protocol's PKCE check) and begin
        the client's session, in one transaction: of two exchanges of one code, one wins and
        the other is a replay."""
        now = self._clock.now()
        async with self._uow() as uow:
            # Everything the code stood on, as it is now, in this transaction: the account (a
            # password, role or status change since the code was made voids it), the consent
            # (taken back or narrowed, the code goes with it) and the client (disabled or
            # narrowed since).
            user = await uow.users.get(record.user_id)
            fresh = await uow.oauth_clients.get(client.id)
            consent = await uow.consents.get(record.user_id, client.id)
            scopes = frozenset(record.scope.split())
            if (
                user is None
                or not user.is_active
                or user.updated_at > record.created_at
                or fresh is None
                or not fresh.is_active
                or consent is None
                or not scopes <= frozenset(consent.scope.split())
            ):
                raise OAuthGrantInvalid()
            client = fresh
            scopes &= frozenset(client.scopes)
            refresh, session = self._auth.begin_delegated_session(user, client.id, scopes, now)
            spent = await uow.authorization_codes.mark_used(record.id, now, session.family_id)
            if spent:
                await uow.refresh_tokens.add(session)
                await self._audit(
                    uow,
                    Actor(user_id=user.id, role=user.role),
                    "oauth.code_exchanged",
                    client.id,
                    {"scope": record.scope, "session_id": session.family_id},
                )
                await uow.commit()
        if not spent:
            # Another exchange of the code got there first (it has committed: the write lock
            # was its until then): as for any code that comes back, its session ends.
            await self._code_replayed(record, now)
            raise OAuthGrantInvalid()
        gives_refresh = client.allows_grant(GrantType.REFRESH_TOKEN)
        return self._auth.delegated_tokens(user, session, refresh if gives_refresh else None)

    async def client_credentials(self, client: OAuthClient, scopes: frozenset[str] | None) -> TokenPair:
        """A token for the client acting as itself (no user, no refresh token): the scopes
        asked (None: all the client was registered for), its role the least covering them.
        The client was authenticated and found active by the protocol layer."""
        granted = frozenset(client.scopes) if scopes is None else scopes
        if not client.allows_grant(GrantType.CLIENT_CREDENTIALS) or not granted <= frozenset(client.scopes):
            raise OAuthGrantInvalid()
        access = self._auth.issue_client_token(client.id, role_for(granted), granted, self._ids.new("cct"))
        return TokenPair(
            access_token=access.token, expires_in=access.expires_in, refresh_token="", scope=format_scopes(granted)
        )

    async def _code_replayed(self, record: AuthorizationCode, now: datetime) -> None:
        async with self._uow() as uow:
            fresh = await uow.authorization_codes.get_by_digest(record.code_digest)
            family = fresh.family_id if fresh is not None else None
            until = await self._auth.end_sessions_in(uow, [family], now) if family is not None else None
            await self._audit(
                uow,
                Actor(user_id=record.user_id, role=Role.CUSTOMER),
                "oauth.code_reused",
                record.client_id,
                {"session_id": family},
            )
            await uow.commit()
        if family is not None and until is not None:
            self._auth.sessions_ended([family], until)

    async def purge_expired_codes(self) -> int:
        """Housekeeping: codes expired a day ago and more. A day, not at once: a code that
        comes back in that time is still known, and still ends the session it began."""
        before = self._clock.now() - CODE_KEPT_AFTER_EXPIRY
        purged = 0
        while True:
            async with self._uow() as uow:
                count = await uow.authorization_codes.purge(before, _PURGE_BATCH)
                await uow.commit()
            purged += count
            if count < _PURGE_BATCH:
                return purged

    # Revocation (RFC 7009) and introspection (RFC 7662).
    async def revoke(self, client: OAuthClient, token: str) -> None:
        """End the session of a refresh or access token this client was issued. A token that
        is unknown, already ended or another client's changes nothing (and says nothing)."""
        session_id: str | None = None
        record = await self._auth.refresh_record(token)
        if record is not None:
            if record.client_id == client.id and record.revoked_at is None:
                session_id = record.family_id
        else:
            try:
                claims = await self._auth.access_claims(token)
            except TokenInvalid:
                return
            if claims.client_id == client.id:
                session_id = claims.session_id
        if session_id is None:
            return
        now = self._clock.now()
        async with self._uow() as uow:
            until = await self._auth.end_sessions_in(uow, [session_id], now)
            await uow.commit()
        self._auth.sessions_ended([session_id], until)

    async def introspect(self, client: OAuthClient, token: str) -> TokenInfo | None:
        """What an active token of this client is; None (``active: false``) for anything
        else, another client's tokens included."""
        now = self._clock.now()
        record = await self._auth.refresh_record(token)
        if record is not None:
            if record.client_id != client.id or not record.is_usable(now) or record.scope is None:
                return None
            return TokenInfo(
                kind="refresh_token",
                client_id=client.id,
                user_id=record.user_id,
                scope=record.scope,
                expires_at=int(record.expires_at.timestamp()),
                issued_at=int(record.created_at.timestamp()),
            )
        try:
            claims = await self._auth.access_claims(token)
        except TokenInvalid:
            return None
        if claims.client_id != client.id or claims.scopes is None:
            return None
        return TokenInfo(
            kind="access_token",
            client_id=client.id,
            user_id=claims.user_id,
            scope=format_scopes(claims.scopes),
            expires_at=claims.expires_at,
            issued_at=claims.issued_at,
        )

    # The user's authorizations (and an admin's view of anyone's).
    async def list_authorizations(self, actor: Actor, user_id: str | None = None) -> list[Authorization]:
        """The caller's consents; an admin may name another user."""
        user_id = await self._whose(actor, user_id)
        async with self._uow(readonly=True) as uow:
            consents = await uow.consents.list_for_user(user_id)
            return [Authorization(consent, await uow.oauth_clients.get(consent.client_id)) for consent in consents]

    async def revoke_authorization(self, actor: Actor, client_id: str, user_id: str | None = None) -> None:
        """Take the consent back: the client's sessions for the user end at once (access
        tokens included), and its next authorization asks again. AuthorizationNotFound if
        there was none."""
        user_id = await self._whose(actor, user_id)
        now = self._clock.now()
        async with self._uow() as uow:
            if not await uow.consents.delete(user_id, client_id):
                raise AuthorizationNotFound(client_id)
            ended, until = await self._auth.end_client_sessions_in(uow, client_id, user_id, now)
            await self._audit(uow, actor, "oauth.consent_revoked", client_id, {"user_id": user_id})
            await uow.commit()
        self._auth.sessions_ended(ended, until)

    async def _whose(self, actor: Actor, user_id: str | None) -> str:
        if user_id is None or user_id == actor.user_id:
            actor = await signed_in(self._uow, actor)
            if actor.user_id is None:
                raise AuthorizationNotFound("operator")
            return actor.user_id
        await as_admin(self._uow, actor)
        return user_id

    async def _audit(self, uow: UnitOfWork, actor: Actor, action: str, client_id: str, details: dict[str, Any]) -> None:
        await self._auditor.record(uow, actor, action, "oauth_client", client_id, details)

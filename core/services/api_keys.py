"""Personal API keys: made by admins for their scripts, used as ``Authorization: Bearer tbk_…``.

A key is a delegated credential: the actor it authenticates carries the key's scopes (so
the API's one scope check narrows it), narrowed again to what the owner's role allows as
the store knows it now. Nothing about a key is cached: every request reads the key by its
digest and its owner by id (two primary-key or unique-index lookups in one read-only
unit), so a revocation, a disabled owner or a demotion holds from the next request on, on
every instance sharing the store, with no invalidation to get wrong.
"""

from __future__ import annotations

import hmac
from datetime import timedelta

import attrs

from core.domain.api_keys import (
    API_KEY_PREFIX,
    LAST_USE_PRECISION,
    ApiKey,
    check_api_key_lifetime,
    check_api_key_name,
)
from core.domain.errors import ApiKeyNotFound, NotAllowed, TokenInvalid, UserNotFound, ValidationFailed
from core.domain.events import rfc3339
from core.domain.pagination import Page, PageRequest
from core.domain.scopes import ROLE_SCOPES, format_scopes, parse_scopes
from core.domain.users import Actor, Role
from core.ports.clock import Clock, IdGenerator
from core.ports.identity import KeyedDigest, OpaqueTokens
from core.ports.repositories import ApiKeyFilter
from core.ports.unit_of_work import UnitOfWorkFactory
from core.services.access import current_actor_in, signed_in
from core.services.audit import Auditor


# Commands.
@attrs.frozen
class CreateApiKey:
    """``user_id`` None: a key of the actor's own. The operator names the admin it is for."""

    actor: Actor
    name: str
    scopes: frozenset[str] | str | tuple[str, ...]  # a set, a list, or the space-separated form
    expires_in: timedelta
    user_id: str | None = None


@attrs.frozen
class ListApiKeys:
    """``user_id`` None: the actor's own keys (the operator: every key). An admin or the
    operator may name any user; ``every_user``: everyone's (admins and the operator)."""

    actor: Actor
    page: PageRequest = attrs.field(factory=PageRequest)
    user_id: str | None = None
    every_user: bool = False


@attrs.frozen
class RevokeApiKey:
    actor: Actor
    key_id: str


@attrs.frozen
class NewApiKey:
    """The key and its secret: the only time the secret exists outside its owner's hands."""

    key: ApiKey
    secret: str = attrs.field(repr=False)


class ApiKeyService:
    def __init__(
        self, uow: UnitOfWorkFactory, tokens: OpaqueTokens, digests: KeyedDigest, clock: Clock, ids: IdGenerator
    ):
        self._uow = uow
        self._tokens = tokens
        self._digests = digests
        self._clock = clock
        self._ids = ids
        self._auditor = Auditor(ids, clock)

    async def create(self, cmd: CreateApiKey) -> NewApiKey:
        """Admins create personal API keys with a subset of their own scopes (the operator,
        for an admin it names). Only from a first-party session or the command line: a key or
        another delegated credential cannot mint keys (``forbidden``). The expiry is 1 hour
        to 365 days ahead. Audited (``api_key.created``), the secret never."""
        _require_first_party(cmd.actor, "created")
        name = check_api_key_name(cmd.name)
        scopes = _parse(cmd.scopes)
        check_api_key_lifetime(cmd.expires_in)
        owner_id = cmd.user_id if cmd.user_id is not None else cmd.actor.user_id
        if owner_id is None:
            raise ValidationFailed({"user": "name the admin the key is for"})
        if owner_id != cmd.actor.user_id and not cmd.actor.is_operator:
            raise NotAllowed("Admins create API keys for themselves only.", code="forbidden")
        secret = API_KEY_PREFIX + self._tokens.generate()
        now = self._clock.now()
        async with self._uow() as uow:
            # Checked in the transaction that makes the key: an admin demoted meanwhile gets none.
            actor = await current_actor_in(uow, cmd.actor)
            actor.require_admin()
            owner = await uow.users.get(owner_id)
            if owner is None:
                raise UserNotFound(owner_id)
            if not owner.is_active:
                raise NotAllowed("This account is disabled; it cannot have new API keys.", code="account_disabled")
            if owner.role is not Role.ADMIN:
                raise NotAllowed("Only admins have personal API keys.", code="forbidden")
            beyond = sorted(scopes - ROLE_SCOPES[owner.role])
            if beyond:  # an admin has every scope today: this holds if a role ever has fewer
                raise NotAllowed(
                    f"An API key cannot have scopes its owner lacks: {', '.join(beyond)}.",
                    code="insufficient_scope",
                    details={"scopes": beyond},
                )
            key = ApiKey(
                id=self._ids.new("key"),
                user_id=owner.id,
                name=name,
                scopes=scopes,
                secret_digest=self._digest(secret),
                created_at=now,
                expires_at=now + cmd.expires_in,
            )
            await uow.api_keys.add(key)
            await self._auditor.record(
                uow,
                actor,
                "api_key.created",
                "api_key",
                key.id,
                {
                    "user_id": owner.id,
                    "name": name,
                    "scopes": format_scopes(scopes),
                    "expires_at": rfc3339(key.expires_at),
                },
            )
            await uow.commit()
        return NewApiKey(key=key, secret=secret)

    async def list(self, cmd: ListApiKeys) -> Page[ApiKey]:
        """Newest first, with each key's last use (to a minute). Anyone signed in sees their
        own keys (an owner demoted since keeps seeing, and revoking, the keys they made);
        admins and the operator anyone's. Not with a delegated credential (``forbidden``)."""
        _require_first_party(cmd.actor, "listed")
        actor = await signed_in(self._uow, cmd.actor)
        user_id = cmd.user_id if cmd.user_id is not None else actor.user_id
        if cmd.every_user or (user_id is not None and user_id != actor.user_id):
            actor.require_admin()
        key_filter = ApiKeyFilter(user_id=None if cmd.every_user else user_id)
        async with self._uow(readonly=True) as uow:
            return await uow.api_keys.list(cmd.page, key_filter)

    async def revoke(self, cmd: RevokeApiKey) -> ApiKey:
        """The owner or any admin (or the operator) revokes a key; it is refused from the next
        request on, on every instance. Revoking a revoked key changes nothing and records
        nothing. Someone else's key is ``api_key_not_found``, as an unknown one is."""
        now = self._clock.now()
        async with self._uow() as uow:
            actor = await current_actor_in(uow, cmd.actor)
            key = await uow.api_keys.get(cmd.key_id)
            if key is None or (key.user_id != actor.user_id and actor.role is not Role.ADMIN):
                raise ApiKeyNotFound(cmd.key_id)
            if key.revoke(now):
                await uow.api_keys.update(key)
                await self._auditor.record(uow, actor, "api_key.revoked", "api_key", key.id, {"user_id": key.user_id})
                await uow.commit()
        return key

    async def authenticate(self, secret: str, source_ip: str | None) -> Actor:
        """The actor a key's secret speaks for: its owner with the role they have now, and the
        key's scopes narrowed to that role's. TokenInvalid (401 ``invalid_token``) for an
        unknown, revoked or expired key, or one whose owner is gone or disabled."""
        digest = self._digest(secret)
        now = self._clock.now()
        async with self._uow(readonly=True) as uow:
            key = await uow.api_keys.get_by_digest(digest)
            owner = None if key is None else await uow.users.get(key.user_id)
        # The lookup was by a keyed digest (nothing an attacker can aim at); compared again
        # in constant time all the same, as every secret is.
        if key is None or not hmac.compare_digest(key.secret_digest, digest) or not key.is_usable(now):
            raise TokenInvalid("The API key is invalid, expired or revoked.")
        if owner is None or not owner.is_active:
            raise TokenInvalid("The account of this API key no longer exists or is disabled.")
        if key.use_is_due(now):
            # At most once a minute per key (LAST_USE_PRECISION): a write on every request
            # would put a write (an fsync on SQLite) on a script's hot path. Only the column:
            # a revocation committed since the read above is never undone.
            async with self._uow() as uow:
                if await uow.api_keys.record_use(key.id, now, unless_since=now - LAST_USE_PRECISION):
                    await uow.commit()
        return Actor(
            user_id=owner.id,
            role=owner.role,
            source_ip=source_ip,
            scopes=key.scopes & ROLE_SCOPES[owner.role],
        )

    def _digest(self, secret: str) -> str:
        return self._digests.digest(secret.encode("utf-8", "surrogatepass"))


def _require_first_party(actor: Actor, what: str) -> None:
    if actor.scopes is not None:
        raise NotAllowed(
            f"API keys cannot be {what} with an API key or another delegated credential;"
            " sign in with your password (or use the command line).",
            code="forbidden",
        )


def _parse(scopes: frozenset[str] | str | tuple[str, ...]) -> frozenset[str]:
    chosen = parse_scopes(scopes if isinstance(scopes, str) else list(scopes))
    if not chosen:
        raise ValidationFailed({"scopes": "name at least one scope"})
    return chosen

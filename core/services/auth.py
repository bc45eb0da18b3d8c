"""Accounts and first-party login: register, log in, refresh, log out, change password, admin."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from datetime import datetime, timedelta

import attrs

from core.domain.api_keys import API_KEY_PREFIX
from core.domain.errors import (
    AccountDisabled,
    Conflict,
    EmailTaken,
    Invalid,
    InvalidCredentials,
    LastAdmin,
    LoginThrottled,
    NotAllowed,
    PasswordHashingBusy,
    RefreshTokenReused,
    RegistrationClosed,
    RegistrationThrottled,
    Throttled,
    TokenInvalid,
    UserEmailNotFound,
    UserNotFound,
)
from core.domain.oauth import GrantType
from core.domain.pagination import Page, PageRequest
from core.domain.scopes import ROLE_SCOPES, format_scopes
from core.domain.users import (
    Actor,
    RefreshToken,
    Role,
    User,
    UserStatus,
    check_password_policy,
    normalize_email,
    normalize_password,
)
from core.ports.clock import Clock, IdGenerator
from core.ports.identity import (
    AccessClaims,
    AccessToken,
    AccessTokenIssuer,
    OpaqueTokens,
    PasswordHasher,
    TextSkeletons,
    Throttle,
    ThrottleBudget,
    ThrottleTicket,
)
from core.ports.repositories import UserFilter
from core.ports.unit_of_work import UnitOfWork, UnitOfWorkFactory
from core.services.access import as_admin, current_actor, current_actor_in
from core.services.api_keys import ApiKeyService
from core.services.audit import Auditor
from core.services.sessions import SessionGuard


def _granted(record: RefreshToken) -> frozenset[str] | None:
    return frozenset(record.scope.split()) if record.scope is not None else None


#: How long after its access tokens' lifetime an ended session is still remembered: covers
#: the verifiers' leeway for clock skew.
_SESSION_RECORD_MARGIN = timedelta(minutes=1)
_PURGE_BATCH = 500


@attrs.frozen
class AuthSettings:
    allow_registration: bool = True
    refresh_token_ttl: timedelta = timedelta(days=30)
    access_token_ttl: timedelta = timedelta(minutes=15)
    # Sign-in attempts: each takes its place in both budgets before the password is checked,
    # and gives it back only if it succeeds, so that concurrent guesses never exceed them.
    login_failures_per_account: int = 5
    login_failures_per_ip: int = 20
    login_window: timedelta = timedelta(minutes=15)
    # Self-registrations per client address (each costs a password hash).
    registrations_per_ip: int = 10
    registration_window: timedelta = timedelta(hours=1)
    # How soon a session ended by another server process is refused here.
    session_poll_interval: timedelta = timedelta(milliseconds=100)


# Commands.
@attrs.frozen
class RegisterUser:
    email: str
    password: str
    source_ip: str | None = None


@attrs.frozen
class CreateUser:
    """An account made by an admin or the operator, with any role."""

    actor: Actor
    email: str
    password: str
    role: Role = Role.CUSTOMER


@attrs.frozen
class LogIn:
    email: str
    password: str
    source_ip: str | None = None
    staff_only: bool = False  # the admin console: a customer's right password is refused (staff_only)


@attrs.frozen
class RefreshSession:
    refresh_token: str
    source_ip: str | None = None
    # The OAuth client presenting it (authenticated by the token endpoint); None: the API's own
    # refresh. A token refreshes only for the client it was issued to.
    client_id: str | None = None
    scopes: frozenset[str] | None = None  # an OAuth client may ask for fewer (RFC 6749 §6)


@attrs.frozen
class LogOut:
    refresh_token: str


@attrs.frozen
class ChangePassword:
    actor: Actor
    current_password: str
    new_password: str


@attrs.frozen
class ListUsers:
    actor: Actor
    page: PageRequest = attrs.field(factory=PageRequest)
    filter: UserFilter = attrs.field(factory=UserFilter)  # ``email`` as the caller typed it


@attrs.frozen
class UpdateUser:
    actor: Actor
    user_id: str
    role: Role | None = None
    status: UserStatus | None = None


@attrs.frozen
class TokenPair:
    access_token: str
    expires_in: int
    refresh_token: str
    scope: str | None = None  # a delegated session's granted scopes; None for first-party


class AuthService:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        hasher: PasswordHasher,
        access_tokens: AccessTokenIssuer,
        opaque_tokens: OpaqueTokens,
        throttle: Throttle,
        skeletons: TextSkeletons,
        clock: Clock,
        ids: IdGenerator,
        settings: AuthSettings,
        api_keys: ApiKeyService | None = None,
    ):
        self._uow = uow
        self._api_keys = api_keys
        self._hasher = hasher
        self._access_tokens = access_tokens
        self._opaque = opaque_tokens
        self._throttle = throttle
        self._skeletons = skeletons
        self._clock = clock
        self._ids = ids
        self._settings = settings
        self._auditor = Auditor(ids, clock)
        self._sessions = SessionGuard(uow, clock, settings.session_poll_interval)
        self._dummy_hash: str | None = None

    # Who is calling.
    async def authenticate(self, access_token: str, source_ip: str | None) -> Actor:
        """The actor a bearer token speaks for; the one place bearer tokens are told apart.

        An access token (a JWT): TokenInvalid if it does not verify or has expired,
        SessionEnded if its session was ended (within a second on every server process
        sharing the store, at once on this one). No database read as a rule: the role is the
        token's; use cases that grant more than a customer's reads check it. One of an OAuth
        client acting as itself is the exception: its registration is read (below).

        A personal API key (``tbk_…``, never the start of a JWT, whose header is base64 JSON,
        ``eyJ…``): see ApiKeyService.authenticate (one indexed read per request)."""
        if access_token.startswith(API_KEY_PREFIX):
            if self._api_keys is None:
                raise TokenInvalid("The API key is invalid, expired or revoked.")
            return await self._api_keys.authenticate(access_token, source_ip)
        claims = self._access_tokens.verify(access_token)
        await self._sessions.check(claims.session_id)
        if claims.client_id is not None and claims.user_id == claims.client_id:
            # An OAuth client acting as itself: it has no account to check later, so its
            # registration is checked now (a disabled client's tokens are refused at once).
            async with self._uow(readonly=True) as uow:
                client = await uow.oauth_clients.get(claims.client_id)
            if client is None or not client.is_active or not client.allows_grant(GrantType.CLIENT_CREDENTIALS):
                raise TokenInvalid("The app of this token is disabled or no longer registered.")
            return Actor(
                user_id=None,
                role=claims.role,
                source_ip=source_ip,
                session_id=claims.session_id,
                scopes=(claims.scopes or frozenset()) & frozenset(client.scopes),  # narrowed since: at once
                client_id=claims.client_id,
            )
        return Actor(
            user_id=claims.user_id,
            role=claims.role,
            source_ip=source_ip,
            session_id=claims.session_id,
            scopes=claims.scopes,
        )

    async def current_user(self, actor: Actor) -> User:
        if actor.user_id is None:
            raise UserNotFound("operator")
        async with self._uow(readonly=True) as uow:
            user = await uow.users.get(actor.user_id)
        if user is None or not user.is_active:
            raise TokenInvalid("The account of this token no longer exists or is disabled.")
        return user

    async def authorize(self, actor: Actor) -> Actor:
        """The caller as the store knows them now (see core/services/access.py)."""
        return await current_actor(self._uow, actor)

    # Accounts.
    async def register(self, cmd: RegisterUser) -> User:
        """Self-registration of a customer, when the store allows it. Throttled per client
        address (each registration, whatever its outcome, counts)."""
        if not self._settings.allow_registration:
            raise RegistrationClosed()
        email, password = self._check_new_account(cmd.email, cmd.password)
        if cmd.source_ip is None:
            return await self._create(email, password, Role.CUSTOMER, actor=None, source_ip=None)
        budget = ThrottleBudget(
            f"register:ip:{address_key(cmd.source_ip)}",
            self._settings.registrations_per_ip,
            _seconds(self._settings.registration_window),
        )
        try:
            ticket = await self._throttle.take([budget])
        except Throttled as exc:
            raise RegistrationThrottled(exc.retry_after) from None
        try:
            return await self._create(email, password, Role.CUSTOMER, actor=None, source_ip=cmd.source_ip)
        except PasswordHashingBusy:
            await self._throttle.give_back(ticket)  # refused for the server's sake, not the caller's
            raise

    async def create_user(self, cmd: CreateUser) -> User:
        """An admin (or the operator) creates an account with any role."""
        actor = await as_admin(self._uow, cmd.actor)
        email, password = self._check_new_account(cmd.email, cmd.password)
        return await self._create(email, password, cmd.role, actor=actor, source_ip=actor.source_ip)

    def _check_new_account(self, email: str, password: str) -> tuple[str, str]:
        email = normalize_email(email)
        password = normalize_password(password)
        check_password_policy(password, email=email)
        return email, password

    async def _create(
        self, email: str, password: str, role: Role, *, actor: Actor | None, source_ip: str | None
    ) -> User:
        # Hash before the transaction: it is slow, and a transaction must stay short.
        password_hash = await self._hasher.hash(password)
        now = self._clock.now()
        user = User(
            id=self._ids.new("usr"),
            email=email,
            email_skeleton=self._skeletons.skeleton(email),
            password_hash=password_hash,
            role=role,
            status=UserStatus.ACTIVE,
            created_at=now,
            updated_at=now,
        )
        async with self._uow() as uow:
            if actor is not None:
                # An admin may grant any role: checked in the transaction that grants it.
                current_actor = await current_actor_in(uow, actor)
                current_actor.require_admin()
            if await uow.users.get_by_email(email) is not None:
                raise EmailTaken()
            await uow.users.add(user)  # also EmailTaken for an address that looks like a taken one
            # A self-registered customer acted on their own account; the operator (no user id)
            # stays None rather than be recorded as the account it created.
            by = actor or Actor(user_id=user.id, role=Role.CUSTOMER, source_ip=source_ip)
            await self._audit(uow, by, "user.created", user.id, {"role": role.value})
            await uow.commit()
        return user

    # Sessions.
    async def login(self, cmd: LogIn) -> TokenPair:
        """Verify the password and start a new session (a new refresh-token family). The
        attempt takes its place in the per-account and per-address budgets before the
        password is checked (LoginThrottled, 429, when either is spent) and gives it back
        only if it succeeds."""
        user, you, new_hash = await self._check_password(cmd)
        now = self._clock.now()
        refresh, record = self._new_refresh_token(user.id, self._ids.new("fam"), now + self._settings.refresh_token_ttl)
        async with self._uow() as uow:
            fresh = await self._signed_in_user(uow, user, new_hash, now)
            await uow.refresh_tokens.add(record)
            await self._audit(uow, you, "auth.login_succeeded", user.id, {})
            await uow.commit()
        return self._pair(fresh, record.family_id, refresh)

    async def sign_in_to_authorize(self, cmd: LogIn) -> User:
        """The authorization page's sign-in (an OAuth client asks for the user's consent):
        the password checked, throttled and audited as ``login``'s, and no session started;
        the client's session begins when it exchanges the code."""
        user, you, new_hash = await self._check_password(cmd)
        now = self._clock.now()
        async with self._uow() as uow:
            fresh = await self._signed_in_user(uow, user, new_hash, now)
            await self._audit(uow, you, "auth.login_succeeded", user.id, {"for": "oauth_authorization"})
            await uow.commit()
        return fresh

    async def _check_password(self, cmd: LogIn) -> tuple[User, Actor, str | None]:
        """The account whose password this is, as the caller then is, and its new hash if it
        needs one; throttled, failures and refusals audited."""
        try:
            email = normalize_email(cmd.email)
            password = normalize_password(cmd.password)
        except Invalid:
            raise InvalidCredentials() from None
        ticket = await self._take_login_attempt(email, cmd.source_ip)
        anonymous = Actor(user_id=None, role=Role.CUSTOMER, source_ip=cmd.source_ip)
        async with self._uow(readonly=True) as uow:
            user = await uow.users.get_by_email(email)
        try:
            if user is None:
                # Spend the same time as a real check so that response times do not reveal
                # which emails have accounts.
                await self._hasher.verify(await self._get_dummy_hash(), password)
                ok = False
            else:
                ok = await self._hasher.verify(user.password_hash, password)
        except PasswordHashingBusy:
            await self._throttle.give_back(ticket)  # not an attempt: the password was never checked
            raise
        if not ok or user is None:
            async with self._uow() as uow:
                # The caller is anonymous: the account is the object, never the actor.
                await self._audit(uow, anonymous, "auth.login_failed", user.id if user else None, {"email": email})
                await uow.commit()
            raise InvalidCredentials()
        you = Actor(user_id=user.id, role=user.role, source_ip=cmd.source_ip)
        if not user.is_active:
            async with self._uow() as uow:
                await self._audit(uow, you, "auth.login_refused", user.id, {"reason": "disabled"})
                await uow.commit()
            raise AccountDisabled()
        if cmd.staff_only and not user.role.is_staff:
            # The right password, but not an account that may sign in here: not a guess.
            await self._throttle.give_back(ticket)
            async with self._uow() as uow:
                await self._audit(uow, you, "auth.login_refused", user.id, {"reason": "not_staff"})
                await uow.commit()
            raise NotAllowed("Only staff and admin accounts can sign in here.", code="staff_only")
        await self._throttle.give_back(ticket, reset=[_login_account_key(email)])
        new_hash = await self._rehash_if_needed(user, password)
        return user, you, new_hash

    async def _signed_in_user(self, uow: UnitOfWork, user: User, new_hash: str | None, now: datetime) -> User:
        """The account read again in the unit that records the sign-in. The password was
        checked outside it: if it was changed (or the account disabled) meanwhile, that
        change revoked every session, and this one must not be born after it."""
        fresh = await uow.users.get(user.id)
        if fresh is None or fresh.password_hash != user.password_hash or not fresh.is_active:
            raise InvalidCredentials()
        if new_hash is not None:
            fresh.change_password_hash(new_hash, at=now)
            await uow.users.update(fresh)
        return fresh

    async def refresh(self, cmd: RefreshSession) -> TokenPair:
        """Rotate: the presented token is spent and a new one of the same family returned.
        Presenting a spent token again means it leaked: the whole family (the session, its
        access tokens included) is revoked."""
        digest = self._opaque.digest(cmd.refresh_token)
        now = self._clock.now()
        async with self._uow() as uow:
            record = await uow.refresh_tokens.get_by_digest(digest)
            if record is None or record.revoked_at is not None or now >= record.expires_at:
                raise TokenInvalid("The refresh token is invalid, expired or revoked.")
            if record.client_id != cmd.client_id:
                raise TokenInvalid("The refresh token is invalid, expired or revoked.")
            scopes = _granted(record)
            if cmd.scopes is not None and scopes is not None and not cmd.scopes <= scopes:
                raise Invalid("A refresh can ask for the scopes granted or fewer.", code="invalid_scope")
            if record.used_at is not None or not await uow.refresh_tokens.mark_used(record.id, now):
                await uow.refresh_tokens.revoke_family(record.family_id, now)
                until = await self._end_sessions(uow, [record.family_id], now)
                await self._audit(
                    uow,
                    Actor(user_id=record.user_id, role=Role.CUSTOMER, source_ip=cmd.source_ip),
                    "auth.refresh_token_reused",
                    record.user_id,
                    {"family_id": record.family_id},
                )
                await uow.commit()
                self._sessions.ended([record.family_id], until)
                raise RefreshTokenReused()
            user = await uow.users.get(record.user_id)
            if user is None or not user.is_active:
                raise TokenInvalid("The account of this token no longer exists or is disabled.")
            scope = record.scope
            if record.client_id is not None:
                # The client as it is now, in this transaction: disabled, or no longer allowed
                # to refresh, its session gives nothing more; narrowed, the session narrows too.
                client = await uow.oauth_clients.get(record.client_id)
                if client is None or not client.is_active or not client.allows_grant(GrantType.REFRESH_TOKEN):
                    raise TokenInvalid("The refresh token is invalid, expired or revoked.")
                scope = format_scopes((scopes or frozenset()) & frozenset(client.scopes))
            refresh, new_record = self._new_refresh_token(
                user.id, record.family_id, record.expires_at, client_id=record.client_id, scope=scope
            )
            await uow.refresh_tokens.add(new_record)
            await uow.commit()
        if record.client_id is None:
            return self._pair(user, record.family_id, refresh)
        return self._delegated_pair(user, new_record, refresh, cmd.scopes)

    # Sessions delegated to OAuth clients (core/services/oauth.py starts them).
    def begin_delegated_session(
        self, user: User, client_id: str, scopes: frozenset[str], now: datetime
    ) -> tuple[str, RefreshToken]:
        """A new session of ``user`` for the client, with the scopes granted: the refresh
        token to give and its record, for the caller to add in its unit of work."""
        return self._new_refresh_token(
            user.id,
            self._ids.new("fam"),
            now + self._settings.refresh_token_ttl,
            client_id=client_id,
            scope=format_scopes(scopes),
        )

    def _delegated_pair(
        self, user: User, record: RefreshToken, refresh: str | None, asked: frozenset[str] | None = None
    ) -> TokenPair:
        """Tokens of a delegated session: its scopes, and never more than the user's role
        allows now (a demoted admin's apps lose the admin scopes at the next refresh)."""
        scopes = (_granted(record) or frozenset()) & ROLE_SCOPES[user.role]
        if asked is not None:
            scopes &= asked
        assert record.client_id is not None
        access = self._access_tokens.issue(
            user.id, user.role, record.family_id, client_id=record.client_id, scopes=scopes
        )
        return TokenPair(
            access_token=access.token,
            expires_in=access.expires_in,
            refresh_token=refresh or "",
            scope=format_scopes(scopes),
        )

    def issue_client_token(self, client_id: str, role: Role, scopes: frozenset[str], session_id: str) -> AccessToken:
        return self._access_tokens.issue_for_client(client_id, role, scopes, session_id)

    def delegated_tokens(self, user: User, record: RefreshToken, refresh: str | None) -> TokenPair:
        return self._delegated_pair(user, record, refresh)

    async def end_client_sessions_in(
        self, uow: UnitOfWork, client_id: str, user_id: str | None, now: datetime
    ) -> tuple[list[str], datetime]:
        """In the caller's unit: every session of the client (of one user, or of all) ends,
        access tokens included. After the commit, pass the result to ``sessions_ended``."""
        families = await uow.refresh_tokens.client_families_since(
            client_id, user_id, now - self._settings.access_token_ttl - _SESSION_RECORD_MARGIN
        )
        await uow.refresh_tokens.revoke_client(client_id, user_id, now)
        return families, await self._end_sessions(uow, families, now)

    async def end_sessions_in(self, uow: UnitOfWork, session_ids: Sequence[str], now: datetime) -> datetime:
        """In the caller's unit: these sessions end (their tokens revoked and refused)."""
        for session_id in session_ids:
            await uow.refresh_tokens.revoke_family(session_id, now)
        return await self._end_sessions(uow, session_ids, now)

    def sessions_ended(self, session_ids: Sequence[str], until: datetime) -> None:
        """This process committed the end of these sessions: refuse their tokens at once."""
        self._sessions.ended(session_ids, until)

    async def access_claims(self, access_token: str) -> AccessClaims:
        """The claims of a valid access token of a session that has not ended."""
        claims = self._access_tokens.verify(access_token)
        await self._sessions.check(claims.session_id)
        return claims

    async def refresh_record(self, refresh_token: str) -> RefreshToken | None:
        async with self._uow(readonly=True) as uow:
            return await uow.refresh_tokens.get_by_digest(self._opaque.digest(refresh_token))

    async def logout(self, cmd: LogOut) -> None:
        """End the session the refresh token belongs to, its access tokens included. Unknown
        tokens are ignored: logging out twice is not an error, and the answer reveals
        nothing about the token."""
        now = self._clock.now()
        async with self._uow() as uow:
            record = await uow.refresh_tokens.get_by_digest(self._opaque.digest(cmd.refresh_token))
            if record is None or record.revoked_at is not None:
                return  # unknown, or its session already ended (and recorded as such)
            await uow.refresh_tokens.revoke_family(record.family_id, now)
            until = await self._end_sessions(uow, [record.family_id], now)
            await uow.commit()
        self._sessions.ended([record.family_id], until)

    async def change_password(self, cmd: ChangePassword) -> None:
        """Needs the current password, throttled and audited like a login (a stolen access
        token must not become a password oracle); ends every session of the user."""
        user = await self.current_user(cmd.actor)
        # The new password first: a refusal of it must not tell whether the current one was
        # right (a stolen access token would test guesses with no attempt counted).
        new_password = normalize_password(cmd.new_password, field="new_password")
        check_password_policy(new_password, email=user.email, field="new_password")
        ticket = await self._take_login_attempt(user.email, cmd.actor.source_ip)
        try:
            current = normalize_password(cmd.current_password)
        except Invalid:
            current = None
        try:
            ok = current is not None and await self._hasher.verify(user.password_hash, current)
        except PasswordHashingBusy:
            await self._throttle.give_back(ticket)
            raise
        you = Actor(user_id=user.id, role=user.role, source_ip=cmd.actor.source_ip)
        if not ok:
            async with self._uow() as uow:
                await self._audit(uow, you, "user.password_change_failed", user.id, {})
                await uow.commit()
            raise InvalidCredentials()
        await self._throttle.give_back(ticket)
        new_hash = await self._hasher.hash(new_password)
        now = self._clock.now()
        async with self._uow() as uow:
            _, ended, until = await self._replace_password(uow, user.id, new_hash, now)
            await self._audit(uow, you, "user.password_changed", user.id, {})
            await uow.commit()
        self._sessions.ended(ended, until)

    # Administration.
    async def list_users(self, cmd: ListUsers) -> Page[User]:
        """Admins only. A filtered list may read many accounts for one page: it says so."""
        await as_admin(self._uow, cmd.actor)
        user_filter = cmd.filter
        if user_filter.email is not None:
            user_filter = attrs.evolve(user_filter, email=normalize_email(user_filter.email))
        async with self._uow(readonly=True, slow=user_filter != UserFilter()) as uow:
            return await uow.users.list(cmd.page, user_filter)

    async def get_user(self, actor: Actor, user_id: str) -> User:
        await as_admin(self._uow, actor)
        async with self._uow(readonly=True) as uow:
            user = await uow.users.get(user_id)
        if user is None:
            raise UserNotFound(user_id)
        return user

    async def update_user(self, cmd: UpdateUser) -> User:
        """Change role and/or status. Disabling ends every session of the user. Checked in
        the transaction of the change: the acting admin must still be an active admin, an
        admin cannot demote or disable themselves, and the store's last active admin is
        never demoted or disabled (LastAdmin), even by two admins acting at once."""
        now = self._clock.now()
        async with self._uow() as uow:
            actor = await current_actor_in(uow, cmd.actor)
            actor.require_admin()
            if cmd.user_id == actor.user_id and (
                (cmd.role is not None and cmd.role is not Role.ADMIN)
                or (cmd.status is not None and cmd.status is not UserStatus.ACTIVE)
            ):
                raise Conflict("You cannot demote or disable your own account.", code="cannot_change_self")
            user = await uow.users.get(cmd.user_id)
            if user is None:
                raise UserNotFound(cmd.user_id)
            was_admin = user.role is Role.ADMIN and user.is_active
            ended: list[str] = []
            until = now
            if cmd.role is not None and cmd.role is not user.role:
                before = user.role
                user.change_role(cmd.role, at=now)
                await self._audit(
                    uow, actor, "user.role_changed", user.id, {"before": before.value, "after": cmd.role.value}
                )
            if cmd.status is not None and cmd.status is not user.status:
                before_status = user.status
                user.change_status(cmd.status, at=now)
                if cmd.status is UserStatus.DISABLED:
                    ended, until = await self._end_every_session(uow, user.id, now)
                await self._audit(
                    uow,
                    actor,
                    "user.status_changed",
                    user.id,
                    {"before": before_status.value, "after": cmd.status.value},
                )
            if was_admin and not (user.role is Role.ADMIN and user.is_active):
                active_admins = await uow.users.count(UserFilter(role=Role.ADMIN, status=UserStatus.ACTIVE))
                if active_admins <= 1:
                    raise LastAdmin()
            await uow.users.update(user)
            await uow.commit()
        self._sessions.ended(ended, until)
        return user

    async def rotate_signing_key(self, actor: Actor) -> str:
        """A new key signs access tokens from now on; the old one verifies until its tokens expire."""
        actor = await as_admin(self._uow, actor)
        kid = await self._access_tokens.rotate_signing_key()
        async with self._uow() as uow:
            await self._auditor.record(uow, actor, "keys.rotated", "signing_key", kid)
            await uow.commit()
        return kid

    async def purge_ended_sessions(self) -> int:
        """For the server's housekeeping: forget the records of sessions whose last access
        token has expired (they can no longer be presented). A batch per unit of work, so
        that other requests get the store in between."""
        purged = 0
        while True:
            async with self._uow() as uow:
                batch = await uow.revoked_sessions.purge(self._clock.now(), _PURGE_BATCH)
                await uow.commit()
            purged += batch
            if batch < _PURGE_BATCH:
                return purged

    # Helpers.
    async def _take_login_attempt(self, email: str, source_ip: str | None) -> ThrottleTicket:
        window = _seconds(self._settings.login_window)
        budgets = [ThrottleBudget(_login_account_key(email), self._settings.login_failures_per_account, window)]
        if source_ip is not None:
            budgets.append(
                ThrottleBudget(f"login:ip:{address_key(source_ip)}", self._settings.login_failures_per_ip, window)
            )
        try:
            return await self._throttle.take(budgets)
        except Throttled as exc:
            raise LoginThrottled(exc.retry_after) from None

    async def _end_sessions(self, uow: UnitOfWork, session_ids: Sequence[str], now: datetime) -> datetime:
        """Record, in the caller's unit of work, that these sessions ended: their access
        tokens are refused from the commit on. Returns until when the record is needed."""
        until = now + self._settings.access_token_ttl + _SESSION_RECORD_MARGIN
        if session_ids:
            await uow.revoked_sessions.add(session_ids, now, until)
        return until

    async def _replace_password(
        self, uow: UnitOfWork, user_id: str, new_hash: str, now: datetime
    ) -> tuple[User, list[str], datetime]:
        """A new password hash, and every session of the account ended (in the caller's unit)."""
        user = await uow.users.get(user_id)
        if user is None:
            raise UserNotFound(user_id)
        user.change_password_hash(new_hash, at=now)
        await uow.users.update(user)
        ended, until = await self._end_every_session(uow, user_id, now)
        return user, ended, until

    async def _end_every_session(self, uow: UnitOfWork, user_id: str, now: datetime) -> tuple[list[str], datetime]:
        # Every session that may still have an unexpired access token: one was issued with
        # each refresh token, so those with a token made within the access-token lifetime.
        families = await uow.refresh_tokens.families_since(
            user_id, now - self._settings.access_token_ttl - _SESSION_RECORD_MARGIN
        )
        await uow.refresh_tokens.revoke_all_for_user(user_id, now)
        return families, await self._end_sessions(uow, families, now)

    async def _rehash_if_needed(self, user: User, password: str) -> str | None:
        if not self._hasher.needs_rehash(user.password_hash):
            return None
        try:
            return await self._hasher.hash(password)
        except PasswordHashingBusy:
            return None  # next time: the sign-in itself must not fail for it

    def _new_refresh_token(
        self,
        user_id: str,
        family_id: str,
        expires_at: datetime,
        *,
        client_id: str | None = None,
        scope: str | None = None,
    ) -> tuple[str, RefreshToken]:
        secret = self._opaque.generate()
        now = self._clock.now()
        record = RefreshToken(
            id=self._ids.new("rtk"),
            user_id=user_id,
            family_id=family_id,
            token_digest=self._opaque.digest(secret),
            created_at=now,
            expires_at=expires_at,
            client_id=client_id,
            scope=scope,
        )
        return secret, record

    def _pair(self, user: User, session_id: str, refresh: str) -> TokenPair:
        access = self._access_tokens.issue(user.id, user.role, session_id)
        return TokenPair(access_token=access.token, expires_in=access.expires_in, refresh_token=refresh)

    async def prepare(self) -> None:
        """Make, at start, the hash a sign-in for an unknown email is checked against: made
        lazily, it would be made at the first such sign-in, queued behind sign-ups (and
        answered differently from a known email's sign-in while the queue is full)."""
        await self._get_dummy_hash()

    async def _get_dummy_hash(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await self._hasher.hash("a password that no account has")
        return self._dummy_hash

    async def _audit(
        self, uow: UnitOfWork, actor: Actor, action: str, user_id: str | None, details: dict[str, object]
    ) -> None:
        await self._auditor.record(uow, actor, action, "user", user_id, details)

    # Operator tasks (the CLI, the admin console): accounts named by email, password resets.
    async def get_user_by_email(self, actor: Actor, email: str) -> User:
        """The account with this email, normalized as at registration and login, so that
        whoever names an account by its email finds the one its owner logs in with.
        Admins and the operator only; an unknown email is ``UserEmailNotFound``."""
        await as_admin(self._uow, actor)
        normalized = normalize_email(email)
        async with self._uow(readonly=True) as uow:
            user = await uow.users.get_by_email(normalized)
        if user is None:
            raise UserEmailNotFound(normalized)
        return user

    async def reset_password(self, cmd: ResetPassword) -> User:
        """An admin or the operator sets a new password for an account whose owner lost it.
        The password policy is that of registration; every session of the user ends; the
        reset is audited with its actor. Admins change their own password with their
        current one (``change_password``): a stolen access token must not be enough."""
        await as_admin(self._uow, cmd.actor)
        if cmd.user_id == cmd.actor.user_id:
            raise NotAllowed(
                "Change your own password with your current one, not by a reset.", code="cannot_reset_own_password"
            )
        password = normalize_password(cmd.new_password)
        user = await self.get_user(cmd.actor, cmd.user_id)
        check_password_policy(password, email=user.email)
        # Hash before the transaction: it is slow, and a transaction must stay short.
        new_hash = await self._hasher.hash(password)
        now = self._clock.now()
        async with self._uow() as uow:
            # The acting admin, read in the transaction of the change: one demoted or
            # disabled meanwhile does not get it through.
            actor = await current_actor_in(uow, cmd.actor)
            actor.require_admin()
            fresh, ended, until = await self._replace_password(uow, user.id, new_hash, now)
            # The account is the object; its email is not written into the log.
            await self._audit(uow, actor, "user.password_reset", fresh.id, {})
            await uow.commit()
        self._sessions.ended(ended, until)
        return fresh


def address_key(address: str) -> str:
    """What a per-address budget counts by. An IPv6 client is given a whole /64 (a home or
    an office gets at least that many addresses, and picks among them freely), so it is
    counted by its /64; IPv4 (also mapped into IPv6) by its address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address  # not an address (a test's or a socket's name): counted as it is
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _login_account_key(email: str) -> str:
    return f"login:account:{email}"


def _seconds(span: timedelta) -> int:
    return max(1, int(span.total_seconds()))


@attrs.frozen
class ResetPassword:
    """An admin or the operator sets a new password for another account."""

    actor: Actor
    user_id: str
    new_password: str

"""Accounts and first-party login: register, log in, refresh, log out, change password, admin."""

from __future__ import annotations

from datetime import datetime, timedelta

import attrs

from core.domain.audit import AuditEntry
from core.domain.errors import (
    AccountDisabled,
    Conflict,
    EmailTaken,
    Invalid,
    InvalidCredentials,
    RefreshTokenReused,
    RegistrationClosed,
    TokenInvalid,
    UserNotFound,
)
from core.domain.pagination import Page, PageRequest
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
from core.ports.identity import AccessTokenIssuer, LoginThrottle, OpaqueTokens, PasswordHasher
from core.ports.repositories import UserFilter
from core.ports.unit_of_work import UnitOfWork, UnitOfWorkFactory


@attrs.frozen
class AuthSettings:
    allow_registration: bool = True
    refresh_token_ttl: timedelta = timedelta(days=30)


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


@attrs.frozen
class RefreshSession:
    refresh_token: str
    source_ip: str | None = None


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
    filter: UserFilter = attrs.field(factory=UserFilter)


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


class AuthService:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        hasher: PasswordHasher,
        access_tokens: AccessTokenIssuer,
        opaque_tokens: OpaqueTokens,
        throttle: LoginThrottle,
        clock: Clock,
        ids: IdGenerator,
        settings: AuthSettings,
    ):
        self._uow = uow
        self._hasher = hasher
        self._access_tokens = access_tokens
        self._opaque = opaque_tokens
        self._throttle = throttle
        self._clock = clock
        self._ids = ids
        self._settings = settings
        self._dummy_hash: str | None = None

    # Accounts.
    async def register(self, cmd: RegisterUser) -> User:
        """Self-registration of a customer, when the store allows it."""
        if not self._settings.allow_registration:
            raise RegistrationClosed()
        return await self._create(
            cmd.email, cmd.password, Role.CUSTOMER, actor_id=None, source_ip=cmd.source_ip, self_registered=True
        )

    async def create_user(self, cmd: CreateUser) -> User:
        """An admin (or the operator) creates an account with any role."""
        cmd.actor.require_admin()
        return await self._create(
            cmd.email,
            cmd.password,
            cmd.role,
            actor_id=cmd.actor.user_id,
            source_ip=cmd.actor.source_ip,
            self_registered=False,
        )

    async def _create(
        self,
        email: str,
        password: str,
        role: Role,
        *,
        actor_id: str | None,
        source_ip: str | None,
        self_registered: bool,
    ) -> User:
        email = normalize_email(email)
        password = normalize_password(password)
        check_password_policy(password, email=email)
        # Hash before the transaction: it is slow, and a transaction must stay short.
        password_hash = await self._hasher.hash(password)
        now = self._clock.now()
        user = User(
            id=self._ids.new("usr"),
            email=email,
            password_hash=password_hash,
            role=role,
            status=UserStatus.ACTIVE,
            created_at=now,
            updated_at=now,
        )
        async with self._uow() as uow:
            if await uow.users.get_by_email(email) is not None:
                raise EmailTaken()
            await uow.users.add(user)
            # A self-registered customer acted on their own account; the operator (no user id)
            # must stay None rather than be recorded as the account it created.
            actor = user.id if self_registered else actor_id
            await self._audit(uow, actor, "user.created", user.id, source_ip, {"role": role.value})
            await uow.commit()
        return user

    async def current_user(self, actor: Actor) -> User:
        if actor.user_id is None:
            raise UserNotFound("operator")
        async with self._uow(readonly=True) as uow:
            user = await uow.users.get(actor.user_id)
        if user is None or not user.is_active:
            # A token outlives a deleted or disabled account by at most its 15 minutes;
            # it reads nothing in that time.
            raise TokenInvalid("The account of this token no longer exists or is disabled.")
        return user

    async def authorize(self, actor: Actor) -> Actor:
        """The caller as the store knows them now. An access token carries the role it was
        issued with; privileged operations re-read role and status, so that a demoted or
        disabled admin loses their powers at once, not when the token expires."""
        user = await self.current_user(actor)
        return Actor(user_id=user.id, role=user.role, source_ip=actor.source_ip)

    # Sessions.
    async def login(self, cmd: LogIn) -> TokenPair:
        """Verify the password and start a new session (a new refresh-token family)."""
        try:
            email = normalize_email(cmd.email)
            password = normalize_password(cmd.password)
        except Invalid:
            raise InvalidCredentials() from None
        await self._throttle.check(email, cmd.source_ip)
        async with self._uow(readonly=True) as uow:
            user = await uow.users.get_by_email(email)
        if user is None:
            # Spend the same time as a real check so that response times do not reveal
            # which emails have accounts.
            await self._hasher.verify(await self._get_dummy_hash(), password)
            ok = False
        else:
            ok = await self._hasher.verify(user.password_hash, password)
        if not ok or user is None:
            await self._throttle.record_failure(email, cmd.source_ip)
            async with self._uow() as uow:
                # The caller is anonymous: the account is the object, never the actor.
                await self._audit(
                    uow, None, "auth.login_failed", user.id if user else None, cmd.source_ip, {"email": email}
                )
                await uow.commit()
            raise InvalidCredentials()
        if not user.is_active:
            async with self._uow() as uow:
                await self._audit(uow, user.id, "auth.login_refused", user.id, cmd.source_ip, {"reason": "disabled"})
                await uow.commit()
            raise AccountDisabled()
        await self._throttle.record_success(email)
        new_hash = await self._hasher.hash(password) if self._hasher.needs_rehash(user.password_hash) else None
        now = self._clock.now()
        refresh, record = self._new_refresh_token(user.id, self._ids.new("fam"), now + self._settings.refresh_token_ttl)
        async with self._uow() as uow:
            # The password was checked outside this transaction: if it was changed (or the
            # account disabled) meanwhile, that change revoked every session, and this one
            # must not be born after it.
            fresh = await uow.users.get(user.id)
            if fresh is None or fresh.password_hash != user.password_hash or not fresh.is_active:
                raise InvalidCredentials()
            if new_hash is not None:
                fresh.change_password_hash(new_hash, at=now)
                await uow.users.update(fresh)
            await uow.refresh_tokens.add(record)
            await self._audit(uow, user.id, "auth.login_succeeded", user.id, cmd.source_ip, {})
            await uow.commit()
        return self._pair(user, refresh)

    async def refresh(self, cmd: RefreshSession) -> TokenPair:
        """Rotate: the presented token is spent and a new one of the same family returned.
        Presenting a spent token again means it leaked: the whole family is revoked."""
        digest = self._opaque.digest(cmd.refresh_token)
        now = self._clock.now()
        async with self._uow() as uow:
            record = await uow.refresh_tokens.get_by_digest(digest)
            if record is None or record.revoked_at is not None or now >= record.expires_at:
                raise TokenInvalid("The refresh token is invalid, expired or revoked.")
            if record.used_at is not None or not await uow.refresh_tokens.mark_used(record.id, now):
                await uow.refresh_tokens.revoke_family(record.family_id, now)
                await self._audit(
                    uow,
                    record.user_id,
                    "auth.refresh_token_reused",
                    record.user_id,
                    cmd.source_ip,
                    {"family_id": record.family_id},
                )
                await uow.commit()
                raise RefreshTokenReused()
            user = await uow.users.get(record.user_id)
            if user is None or not user.is_active:
                raise TokenInvalid("The account of this token no longer exists or is disabled.")
            refresh, new_record = self._new_refresh_token(user.id, record.family_id, record.expires_at)
            await uow.refresh_tokens.add(new_record)
            await uow.commit()
        return self._pair(user, refresh)

    async def logout(self, cmd: LogOut) -> None:
        """End the session the refresh token belongs to. Unknown tokens are ignored: logging
        out twice is not an error, and the answer reveals nothing about the token."""
        now = self._clock.now()
        async with self._uow() as uow:
            record = await uow.refresh_tokens.get_by_digest(self._opaque.digest(cmd.refresh_token))
            if record is not None:
                await uow.refresh_tokens.revoke_family(record.family_id, now)
                await uow.commit()

    async def change_password(self, cmd: ChangePassword) -> None:
        """Needs the current password, throttled and audited like a login (a stolen access
        token must not become a password oracle); ends every session of the user."""
        user = await self.current_user(cmd.actor)
        await self._throttle.check(user.email, cmd.actor.source_ip)
        try:
            current = normalize_password(cmd.current_password)
        except Invalid:
            current = None
        if current is None or not await self._hasher.verify(user.password_hash, current):
            await self._throttle.record_failure(user.email, cmd.actor.source_ip)
            async with self._uow() as uow:
                await self._audit(uow, user.id, "user.password_change_failed", user.id, cmd.actor.source_ip, {})
                await uow.commit()
            raise InvalidCredentials()
        new_password = normalize_password(cmd.new_password)
        check_password_policy(new_password, email=user.email)
        new_hash = await self._hasher.hash(new_password)
        now = self._clock.now()
        async with self._uow() as uow:
            fresh = await uow.users.get(user.id)
            if fresh is None:
                raise UserNotFound(user.id)
            fresh.change_password_hash(new_hash, at=now)
            await uow.users.update(fresh)
            await uow.refresh_tokens.revoke_all_for_user(user.id, now)
            await self._audit(uow, user.id, "user.password_changed", user.id, cmd.actor.source_ip, {})
            await uow.commit()

    # Administration.
    async def list_users(self, cmd: ListUsers) -> Page[User]:
        """Admins only. A filtered list may read many accounts for one page: it says so."""
        cmd.actor.require_admin()
        async with self._uow(readonly=True, slow=cmd.filter != UserFilter()) as uow:
            return await uow.users.list(cmd.page, cmd.filter)

    async def get_user(self, actor: Actor, user_id: str) -> User:
        actor.require_admin()
        async with self._uow(readonly=True) as uow:
            user = await uow.users.get(user_id)
        if user is None:
            raise UserNotFound(user_id)
        return user

    async def update_user(self, cmd: UpdateUser) -> User:
        """Change role and/or status. Disabling ends every session of the user. Admins cannot
        demote or disable themselves, so a store always keeps the admin who is acting."""
        cmd.actor.require_admin()
        if cmd.user_id == cmd.actor.user_id and (
            (cmd.role is not None and cmd.role is not Role.ADMIN)
            or (cmd.status is not None and cmd.status is not UserStatus.ACTIVE)
        ):
            raise Conflict("You cannot demote or disable your own account.", code="cannot_change_self")
        now = self._clock.now()
        async with self._uow() as uow:
            user = await uow.users.get(cmd.user_id)
            if user is None:
                raise UserNotFound(cmd.user_id)
            if cmd.role is not None and cmd.role is not user.role:
                before = user.role
                user.change_role(cmd.role, at=now)
                await self._audit(
                    uow,
                    cmd.actor.user_id,
                    "user.role_changed",
                    user.id,
                    cmd.actor.source_ip,
                    {"before": before.value, "after": cmd.role.value},
                )
            if cmd.status is not None and cmd.status is not user.status:
                before_status = user.status
                user.change_status(cmd.status, at=now)
                if cmd.status is UserStatus.DISABLED:
                    await uow.refresh_tokens.revoke_all_for_user(user.id, now)
                await self._audit(
                    uow,
                    cmd.actor.user_id,
                    "user.status_changed",
                    user.id,
                    cmd.actor.source_ip,
                    {"before": before_status.value, "after": cmd.status.value},
                )
            await uow.users.update(user)
            await uow.commit()
        return user

    async def rotate_signing_key(self, actor: Actor) -> str:
        """A new key signs access tokens from now on; the old one verifies until its tokens expire."""
        actor.require_admin()
        kid = self._access_tokens.rotate_signing_key()
        async with self._uow() as uow:
            await uow.audit.append(
                AuditEntry(
                    id=self._ids.new("aud"),
                    at=self._clock.now(),
                    actor_id=actor.user_id,
                    action="keys.rotated",
                    object_type="signing_key",
                    object_id=kid,
                    source_ip=actor.source_ip,
                    details={},
                )
            )
            await uow.commit()
        return kid

    # Helpers.
    def _new_refresh_token(self, user_id: str, family_id: str, expires_at: datetime) -> tuple[str, RefreshToken]:
        secret = self._opaque.generate()
        now = self._clock.now()
        record = RefreshToken(
            id=self._ids.new("rtk"),
            user_id=user_id,
            family_id=family_id,
            token_digest=self._opaque.digest(secret),
            created_at=now,
            expires_at=expires_at,
        )
        return secret, record

    def _pair(self, user: User, refresh: str) -> TokenPair:
        access = self._access_tokens.issue(user.id, user.role)
        return TokenPair(access_token=access.token, expires_in=access.expires_in, refresh_token=refresh)

    async def _get_dummy_hash(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await self._hasher.hash("a password that no account has")
        return self._dummy_hash

    async def _audit(
        self,
        uow: UnitOfWork,
        actor_id: str | None,
        action: str,
        object_id: str | None,
        source_ip: str | None,
        details: dict[str, object],
    ) -> None:
        await uow.audit.append(
            AuditEntry(
                id=self._ids.new("aud"),
                at=self._clock.now(),
                actor_id=actor_id,
                action=action,
                object_type="user",
                object_id=object_id,
                source_ip=source_ip,
                details=details,
            )
        )

"""Users, roles and the rules for emails and passwords."""

from __future__ import annotations

import enum
import re
import unicodedata
from datetime import datetime

import attrs

from core.domain.common_passwords import COMMON_PASSWORDS
from core.domain.errors import NotAllowed, ValidationFailed


class Role(enum.StrEnum):
    CUSTOMER = "customer"
    STAFF = "staff"
    ADMIN = "admin"

    @property
    def is_staff(self) -> bool:
        """Staff and admins manage the catalog and orders."""
        return self in (Role.STAFF, Role.ADMIN)


class UserStatus(enum.StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"


# Deliberately permissive (RFC 5322 is not a useful validator): one @, something on
# each side, a dot in the domain, no spaces. The mailbox is proven by using it.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
MAX_EMAIL_LENGTH = 254
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 128


def normalize_email(email: str) -> str:
    """Emails are unique case-insensitively; we store and compare the lower-cased form."""
    normalized = email.strip().lower()
    if len(normalized) > MAX_EMAIL_LENGTH or not _EMAIL.match(normalized):
        raise ValidationFailed({"email": "is not a valid email address"})
    return normalized


def normalize_password(password: str, *, field: str = "password") -> str:
    """NFKC, as NIST SP 800-63B asks, so that the same text typed on two keyboards is the
    same password. Text that cannot be encoded (lone surrogates) is refused. ``field``
    names the password in the request, for the error."""
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationFailed({field: "has characters that are not valid text"}) from None
    return unicodedata.normalize("NFKC", password)


def check_password_policy(password: str, *, email: str | None = None, field: str = "password") -> None:
    """NIST SP 800-63B: length and a blocklist, no composition rules."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationFailed({field: f"must have at least {MIN_PASSWORD_LENGTH} characters"})
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValidationFailed({field: f"must have at most {MAX_PASSWORD_LENGTH} characters"})
    lowered = password.lower()
    if email is not None and lowered == email.lower():
        raise ValidationFailed({field: "must not be the account's email address"})
    if lowered in COMMON_PASSWORDS or len(set(lowered)) < 4:
        raise ValidationFailed({field: "is too common or too easy to guess; choose another"})


@attrs.define
class User:
    id: str
    email: str
    password_hash: str
    role: Role
    status: UserStatus
    created_at: datetime
    updated_at: datetime

    @property
    def is_active(self) -> bool:
        return self.status is UserStatus.ACTIVE

    def change_role(self, role: Role, *, at: datetime) -> None:
        self.role = role
        self.updated_at = at

    def change_status(self, status: UserStatus, *, at: datetime) -> None:
        self.status = status
        self.updated_at = at

    def change_password_hash(self, password_hash: str, *, at: datetime) -> None:
        self.password_hash = password_hash
        self.updated_at = at


@attrs.frozen
class Actor:
    """Who is asking: the authenticated user (or the operator at the command line)."""

    user_id: str | None
    role: Role
    source_ip: str | None = None

    @classmethod
    def operator(cls) -> Actor:
        """The person at the server's command line: trusted like an admin, not a user."""
        return cls(user_id=None, role=Role.ADMIN, source_ip="cli")

    @property
    def is_staff(self) -> bool:
        return self.role.is_staff

    def require_staff(self) -> None:
        if not self.role.is_staff:
            raise NotAllowed("Only staff can do this.", code="forbidden")

    def require_admin(self) -> None:
        if self.role is not Role.ADMIN:
            raise NotAllowed("Only admins can do this.", code="forbidden")


@attrs.define
class RefreshToken:
    """One link of a rotation chain. Only the digest of the secret is ever stored."""

    id: str
    user_id: str
    family_id: str
    token_digest: str
    created_at: datetime
    expires_at: datetime  # absolute: inherited from the first token of the family
    used_at: datetime | None = None
    revoked_at: datetime | None = None

    def is_usable(self, now: datetime) -> bool:
        return self.used_at is None and self.revoked_at is None and now < self.expires_at

"""Users, roles and the rules for emails and passwords."""

from __future__ import annotations

import enum
import re
import unicodedata
from datetime import datetime

import attrs

from core.domain.common_passwords import COMMON_PASSWORDS
from core.domain.errors import InsufficientScope, NotAllowed, ValidationFailed


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


# Default_Ignorable_Code_Point (Unicode's DerivedCoreProperties.txt): characters that render
# as nothing, among them letters (Hangul fillers) that no general category gives away.
_DEFAULT_IGNORABLE = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x2800, 0x2800),  # Braille pattern blank: not ignorable, but it renders as a space
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
# Control, format, surrogate, private-use and unassigned characters, and separators.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"})


def _is_invisible(char: str) -> bool:
    code = ord(char)
    return unicodedata.category(char) in _INVISIBLE_CATEGORIES or any(
        low <= code <= high for low, high in _DEFAULT_IGNORABLE
    )


def normalize_email(email: str) -> str:
    """Emails are unique case-insensitively and in their compatibility form (NFKC: a
    fullwidth "ｋ" is a "k"); we store and compare that form, lower-cased. Addresses with
    invisible or control characters are refused: two of them would look the same as one
    without. (Look-alikes made of visible characters are the skeleton's job: see User.)"""
    text = unicodedata.normalize("NFKC", email.strip())
    if any(_is_invisible(c) and not c.isspace() for c in text):  # white space: simply not an address
        raise ValidationFailed({"email": "cannot contain invisible or control characters"})
    normalized = unicodedata.normalize("NFKC", text.lower())
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
    # The address's confusable skeleton (UTS #39): no two accounts have addresses that look alike.
    email_skeleton: str = attrs.field(kw_only=True)

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
    session_id: str | None = None  # the sign-in session the caller's access token belongs to
    is_operator: bool = False
    # What a delegated credential (OAuth token, API key) was granted; None for a first-party
    # session, which carries its role's full set. The role still decides in each use case.
    scopes: frozenset[str] | None = None
    # An OAuth client acting as itself (the client credentials grant): no user; its role the
    # least whose scopes cover what the client was granted (core/domain/scopes.py role_for).
    client_id: str | None = None

    @classmethod
    def operator(cls) -> Actor:
        """The person at the server's command line: trusted like an admin, not a user."""
        return cls(user_id=None, role=Role.ADMIN, source_ip="cli", is_operator=True)

    @property
    def is_staff(self) -> bool:
        return self.role.is_staff

    def require_staff(self) -> None:
        if not self.role.is_staff:
            raise NotAllowed("Only staff can do this.", code="forbidden")

    def require_admin(self) -> None:
        if self.role is not Role.ADMIN:
            raise NotAllowed("Only admins can do this.", code="forbidden")

    def require_scope(self, scope: str) -> None:
        """Refuses a delegated credential that was not granted ``scope``."""
        if self.scopes is not None and scope not in self.scopes:
            raise InsufficientScope(scope)


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
    # A session an OAuth client was given (core/domain/grants.py): the client and the scopes
    # granted. None for a first-party session (the API's own login, the console).
    client_id: str | None = None
    scope: str | None = None

    def is_usable(self, now: datetime) -> bool:
        return self.used_at is None and self.revoked_at is None and now < self.expires_at

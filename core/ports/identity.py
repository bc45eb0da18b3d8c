"""Ports for proving who someone is: password hashes, access tokens, opaque secrets."""

from __future__ import annotations

from typing import Protocol

import attrs

from core.domain.users import Role


class PasswordHasher(Protocol):
    async def hash(self, password: str) -> str:
        """A self-describing hash (algorithm and parameters included). Never blocks the caller's loop."""

    async def verify(self, password_hash: str, password: str) -> bool:
        """True if the password matches. Never raises for a wrong password or a malformed hash."""

    def needs_rehash(self, password_hash: str) -> bool:
        """True if the hash was made with weaker parameters than the current ones."""


@attrs.frozen
class AccessToken:
    token: str
    expires_in: int  # seconds


@attrs.frozen
class AccessClaims:
    user_id: str
    role: Role
    expires_at: int  # unix seconds


class AccessTokenIssuer(Protocol):
    def issue(self, user_id: str, role: Role) -> AccessToken: ...

    def verify(self, token: str) -> AccessClaims:
        """The claims of a valid token; raises TokenInvalid for anything else
        (expired, wrong signature, wrong algorithm, wrong issuer or audience)."""

    def rotate_signing_key(self) -> str:
        """Start signing with a new key and return its id; tokens signed with the old key
        keep verifying until they expire."""


class OpaqueTokens(Protocol):
    """Random bearer secrets (refresh tokens) and the digest under which they are stored."""

    def generate(self) -> str: ...

    def digest(self, token: str) -> str: ...


class LoginThrottle(Protocol):
    """Counts failed logins per account and per source IP over a sliding window."""

    async def check(self, email: str, source_ip: str | None) -> None:
        """Raise LoginThrottled (with seconds to wait) if either limit is reached."""

    async def record_failure(self, email: str, source_ip: str | None) -> None: ...

    async def record_success(self, email: str) -> None:
        """A successful login clears the account's failures (not the IP's)."""

"""Ports for proving who someone is: password hashes, access tokens, opaque secrets,
keyed digests, throttles and the look-alike key of an email address."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import attrs

from core.domain.users import Role


class PasswordHasher(Protocol):
    """Hashing is slow by design (argon2id: tens of milliseconds of CPU each) and runs off the
    caller's loop in a bounded pool. Checks (sign-ins) are served before waiting hashes
    (sign-ups, password changes), so that a flood of new accounts never makes a sign-in
    wait; and neither queue grows without bound: past its limit a call is refused at once
    with PasswordHashingBusy (429, Retry-After) instead of waiting."""

    async def hash(self, password: str) -> str:
        """A self-describing hash (algorithm and parameters included)."""

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
    session_id: str  # the sign-in session (refresh-token family) the token was issued to
    expires_at: int  # unix seconds
    # The OAuth client the token was issued to and its granted scopes; None for a first-party
    # session (client_id "tillbox", the role's full set).
    client_id: str | None = None
    scopes: frozenset[str] | None = None
    issued_at: int | None = None  # unix seconds (for introspection)


class AccessTokenIssuer(Protocol):
    def issue(
        self,
        user_id: str,
        role: Role,
        session_id: str,
        *,
        client_id: str | None = None,
        scopes: frozenset[str] | None = None,
    ) -> AccessToken:
        """A token for the user's session; with ``client_id``, one delegated to that OAuth
        client, carrying ``scopes`` (already bounded by the client and the role)."""

    def issue_for_client(self, client_id: str, role: Role, scopes: frozenset[str], session_id: str) -> AccessToken:
        """A token of an OAuth client acting as itself (RFC 9068 §2.2: ``sub`` is the client
        id); ``session_id`` is the token's own, so that revoking it ends it alone."""

    def verify(self, token: str) -> AccessClaims:
        """The claims of a valid token; raises TokenInvalid for anything else
        (expired, wrong signature, wrong algorithm, wrong issuer or audience)."""

    async def rotate_signing_key(self) -> str:
        """Start signing with a new key and return its id; tokens signed with the old key
        keep verifying until they expire."""


class OpaqueTokens(Protocol):
    """Random bearer secrets (refresh tokens) and the digest under which they are stored.
    The secrets have full entropy (256 bits), so no digest of one can be reversed by guessing."""

    def generate(self) -> str: ...

    def digest(self, token: str) -> str: ...


class KeyedDigest(Protocol):
    """A digest keyed with a secret that only the server holds (HMAC): what is stored about
    a request that may carry a secret (a password in an Idempotency-Key's fingerprint)
    cannot be checked against guesses by anyone who has the database but not the key."""

    def digest(self, data: bytes) -> str: ...


@attrs.frozen
class ThrottleBudget:
    """At most ``limit`` uses of ``key`` within any ``window_seconds``."""

    key: str
    limit: int
    window_seconds: int


@attrs.frozen
class ThrottleTicket:
    """One use taken from each of some budgets (``id`` tells it from any other use)."""

    keys: tuple[str, ...]
    id: str


class Throttle(Protocol):
    """Sliding-window budgets, counted alike by every server process sharing the store's host.
    Keys are the caller's business (what is limited); they may hold personal data such as
    an email, which adapters never store in the clear."""

    async def take(self, budgets: Sequence[ThrottleBudget]) -> ThrottleTicket:
        """One use of every budget, atomically: if any budget is spent, raise Throttled
        (with the seconds until all of them have room again) and record nothing; otherwise
        record a use in each and return the ticket. However many callers take at once, no
        budget is ever used more than its limit within its window."""

    async def give_back(self, ticket: ThrottleTicket, *, reset: Sequence[str] = ()) -> None:
        """The ticket's use did not count after all (a sign-in that succeeded): forget it,
        and forget every use of the keys in ``reset``."""


class TextSkeletons(Protocol):
    """Unicode's confusable skeletons (UTS #39, section 4): two strings that look alike to a
    reader have the same skeleton (Latin "a" and Cyrillic "а", "rn" and "m")."""

    def skeleton(self, text: str) -> str: ...

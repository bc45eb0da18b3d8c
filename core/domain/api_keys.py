"""Personal API keys: long-lived bearer secrets (``tbk_…``) an admin makes for a script.

A key speaks for its owner with at most the scopes it was given, and never more than the
owner's role allows now: what it may do is its scopes ∩ the scopes of the owner's current
role, so a demoted owner's key loses what the new role lacks, and a disabled owner's keys
are refused. Only the keyed digest of the secret is kept; the secret is shown once.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import attrs

from core.domain.errors import ValidationFailed

#: What every API key's secret starts with: how a bearer token is told from an access token
#: (core/services/auth.py), and how a secret found in a log or a repository is recognized.
API_KEY_PREFIX = "tbk_"
MAX_API_KEY_NAME_LENGTH = 100
MIN_API_KEY_LIFETIME = timedelta(hours=1)
MAX_API_KEY_LIFETIME = timedelta(days=365)
#: A key's last use is written at most this often: a write per request would put a
#: database write (and, on SQLite, an fsync) on the hot path of every call a script makes.
LAST_USE_PRECISION = timedelta(minutes=1)


def check_api_key_name(name: str) -> str:
    """1-100 characters, not only white space; kept as given but for surrounding spaces."""
    stripped = name.strip()
    if not stripped:
        raise ValidationFailed({"name": "must not be empty"})
    if len(stripped) > MAX_API_KEY_NAME_LENGTH:
        raise ValidationFailed({"name": f"must have at most {MAX_API_KEY_NAME_LENGTH} characters"})
    if any(not c.isprintable() for c in stripped):
        raise ValidationFailed({"name": "cannot contain control characters"})
    return stripped


def check_api_key_lifetime(lifetime: timedelta) -> None:
    if lifetime < MIN_API_KEY_LIFETIME:
        raise ValidationFailed({"expires_in_days": "must be at least one hour ahead"})
    if lifetime > MAX_API_KEY_LIFETIME:
        raise ValidationFailed({"expires_in_days": "must be at most 365 days ahead"})


@attrs.define
class ApiKey:
    id: str
    user_id: str  # the owner
    name: str
    scopes: frozenset[str]  # never empty
    secret_digest: str  # keyed digest (HMAC) of the secret; the secret itself is never stored
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None

    def is_usable(self, now: datetime) -> bool:
        return self.revoked_at is None and now < self.expires_at

    def revoke(self, at: datetime) -> bool:
        """False if it was revoked already (revoking twice changes nothing)."""
        if self.revoked_at is not None:
            return False
        self.revoked_at = at
        return True

    def use_is_due(self, now: datetime) -> bool:
        """Whether this use should be written down (see LAST_USE_PRECISION)."""
        return self.last_used_at is None or now - self.last_used_at >= LAST_USE_PRECISION

"""What a user grants an OAuth client: authorization codes and remembered consents.

The tokens a grant gives are the first-party ones' (core/domain/users.py RefreshToken, one
family a session), marked with the client and the scopes: ending the session (a replayed
refresh token, a replayed code, the user or an admin taking the authorization back, the
client disabled) ends its access tokens too.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import attrs

#: RFC 6749 §4.1.2 recommends at most 10 minutes; a client exchanges a code within seconds.
CODE_TTL = timedelta(minutes=5)


@attrs.define
class AuthorizationCode:
    """One code of the authorization code grant: single use, bound to its client, redirect
    URI and PKCE challenge (S256). Only the digest of the code is stored."""

    id: str
    code_digest: str
    client_id: str
    user_id: str
    redirect_uri: str
    scope: str  # granted, space separated (core/domain/scopes.py format_scopes)
    code_challenge: str  # BASE64URL(SHA256(code_verifier)), RFC 7636 S256
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None = None
    family_id: str | None = None  # the session its exchange began: ended if the code comes back

    def is_usable(self, now: datetime) -> bool:
        return self.used_at is None and now < self.expires_at


@attrs.define
class Consent:
    """A user's remembered approval of a client's scopes: the authorization page asks again
    only for scopes beyond these. Taking it back ends the client's sessions for the user."""

    user_id: str
    client_id: str
    scope: str  # space separated
    granted_at: datetime
    updated_at: datetime

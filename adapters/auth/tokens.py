"""JWT access tokens (RFC 9068 style), signed with the Ed25519 keys of a KeyRing: the
data directory's files (SigningKeys) or the PostgreSQL store's (PostgresSigningKeys)."""

from __future__ import annotations

import secrets
from collections import OrderedDict
from typing import Any, Protocol

from joserfc import jwt
from joserfc.errors import ExpiredTokenError, JoseError, UnsupportedAlgorithmError
from joserfc.jwa import JWSAlgModel
from joserfc.jws import JWSRegistry
from joserfc.util import json_b64decode

from adapters.auth.keys import ALGORITHM
from core.domain.errors import TokenInvalid
from core.domain.scopes import FIRST_PARTY_CLIENT_ID, ROLE_SCOPES, SCOPES, format_scopes
from core.domain.users import Role
from core.ports.clock import Clock
from core.ports.identity import AccessClaims, AccessToken

TOKEN_TYPE = "at+jwt"  # noqa: S105 - RFC 9068: keeps an ID token or another JWT from passing as an access token
# Ours are about 400 characters; refusing big inputs early keeps junk from costing base64 and JSON work.
MAX_TOKEN_LENGTH = 4096
_ROLES = frozenset(r.value for r in Role)
_HEADER_FIELDS = {"alg", "kid", "typ"}


class _EdDSAOnly(JWSRegistry):
    """joserfc's registry, allowing EdDSA and nothing else. It also drops joserfc's per-call
    SecurityWarning for "EdDSA" (RFC 9864 prefers the curve-specific name "Ed25519"): the
    algorithm is pinned to Ed25519 keys here, and most clients know only "EdDSA" today."""

    def get_alg(self, name: str) -> JWSAlgModel:
        if name != ALGORITHM:
            raise UnsupportedAlgorithmError(f"Algorithm of '{name}' is not allowed")
        return self.algorithms[name]


class KeyRing(Protocol):
    """What tokens are signed and verified with. The lookups are synchronous and cheap (the
    path of every request); rotation may do I/O."""

    def signing_key(self) -> tuple[str, Any]: ...

    def verification_key(self, kid: str) -> Any | None: ...

    def is_active(self, kid: str, now: float) -> bool: ...

    def public_jwks(self) -> dict[str, list[dict[str, Any]]]: ...

    async def rotate_now(self, access_token_ttl_seconds: int) -> str: ...


class JwtAccessTokens:
    """Issues and verifies access tokens.

    Verification is on the path of every authenticated request, so tokens that verified are
    kept in a bounded LRU cache (token text -> claims): a repeat costs a dict lookup, an expiry
    check against the clock and a check that the signing key is not retired. Failures are
    never cached, so a bad token always pays for a full check.
    """

    def __init__(
        self,
        keys: KeyRing,
        *,
        issuer: str,
        audience: str,
        ttl_seconds: int = 900,
        clock: Clock,
        leeway_seconds: int = 30,
        cache_size: int = 10000,
    ):
        if ttl_seconds < 1 or leeway_seconds < 0 or cache_size < 0:
            raise ValueError("ttl_seconds must be positive; leeway_seconds and cache_size not negative")
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._ttl = ttl_seconds
        self._clock = clock
        self._leeway = leeway_seconds
        self._cache_size = cache_size
        self._cache: OrderedDict[str, tuple[AccessClaims, str]] = OrderedDict()
        self._registry = _EdDSAOnly(algorithms=[ALGORITHM])
        self._claims = jwt.JWTClaimsRegistry(
            now=self._now,
            leeway=leeway_seconds,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": audience},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
            jti={"essential": True},
            sid={"essential": True},
        )

    def issue(
        self,
        user_id: str,
        role: Role,
        session_id: str,
        *,
        client_id: str | None = None,
        scopes: frozenset[str] | None = None,
    ) -> AccessToken:
        kid, key = self._keys.signing_key()
        now = self._now()
        header = {"alg": ALGORITHM, "kid": kid, "typ": TOKEN_TYPE}
        claims = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": user_id,
            "role": role.value,
            "sid": session_id,  # the sign-in session: ending it ends this token too
            # RFC 9068: the client the token was issued to (the API's own login here) and its
            # scopes, a first-party session's being its role's full set.
            "client_id": client_id or FIRST_PARTY_CLIENT_ID,
            "scope": format_scopes(ROLE_SCOPES[role] if client_id is None or scopes is None else scopes),
            "iat": now,
            "exp": now + self._ttl,
            "jti": secrets.token_urlsafe(16),
        }
        token = jwt.encode(header, claims, key, registry=self._registry, default_type=None)
        return AccessToken(token=token, expires_in=self._ttl)

    def issue_for_client(self, client_id: str, role: Role, scopes: frozenset[str], session_id: str) -> AccessToken:
        return self.issue(client_id, role, session_id, client_id=client_id, scopes=scopes)

    async def rotate_signing_key(self) -> str:
        return await self._keys.rotate_now(self._ttl)

    def verify(self, token: str) -> AccessClaims:
        cached = self._cache.get(token)
        if cached is not None:
            claims, kid = cached
            now = self._clock.now().timestamp()
            if claims.expires_at > now - self._leeway and self._keys.is_active(kid, now):
                try:
                    self._cache.move_to_end(token)
                except KeyError:  # evicted by another thread meanwhile; still valid
                    pass
                return claims
            self._cache.pop(token, None)
            raise TokenInvalid()
        claims, kid = self._verify_fully(token)
        if self._cache_size:
            self._cache[token] = (claims, kid)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return claims

    def _verify_fully(self, token: str) -> tuple[AccessClaims, str]:
        if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_LENGTH or not token.isascii():
            raise TokenInvalid()
        # The header is checked before any key is looked up: only EdDSA, only our token type,
        # a kid that names one of our keys, and nothing else (no jku, jwk, x5u, crit, b64: we
        # sign only these three, so nothing else needs interpreting).
        header = _header(token)
        kid = header.get("kid")
        if (
            header.keys() != _HEADER_FIELDS
            or header["alg"] != ALGORITHM
            or header["typ"] != TOKEN_TYPE
            or not isinstance(kid, str)
        ):
            raise TokenInvalid()
        key = self._keys.verification_key(kid)
        if key is None:
            raise TokenInvalid("The token was signed with a key that is unknown or retired.")
        try:
            decoded = jwt.decode(token, key, registry=self._registry)
            self._claims.validate(decoded.claims)
        except ExpiredTokenError:
            raise TokenInvalid("The access token has expired.") from None
        except (JoseError, ValueError, TypeError):
            raise TokenInvalid() from None
        claims = decoded.claims
        role_name = claims.get("role")
        if not isinstance(role_name, str) or role_name not in _ROLES:
            raise TokenInvalid()
        role = Role(role_name)
        session_id = claims["sid"]
        if not isinstance(session_id, str) or not session_id:
            raise TokenInvalid()
        exp = claims["exp"]  # a NumericDate, checked by the claims registry
        client_id = claims.get("client_id", FIRST_PARTY_CLIENT_ID)
        scope = claims.get("scope")
        if not isinstance(client_id, str) or not client_id or (scope is not None and not isinstance(scope, str)):
            raise TokenInvalid()
        delegated = client_id != FIRST_PARTY_CLIENT_ID
        if delegated and (scope is None or not set(scope.split()) <= SCOPES.keys()):
            raise TokenInvalid()
        return AccessClaims(
            user_id=claims["sub"],
            role=role,
            session_id=session_id,
            expires_at=int(exp),
            client_id=client_id if delegated else None,
            scopes=frozenset(scope.split()) if delegated and scope is not None else None,
            issued_at=int(claims["iat"]),
        ), kid

    def _now(self) -> int:
        return int(self._clock.now().timestamp())


def _header(token: str) -> dict[str, Any]:
    segment, _, rest = token.partition(".")
    if not rest:
        raise TokenInvalid()
    try:
        header = json_b64decode(segment.encode("ascii"))
    except (ValueError, TypeError, RecursionError):  # RecursionError: absurdly nested JSON
        raise TokenInvalid() from None
    if not isinstance(header, dict):
        raise TokenInvalid()
    return header

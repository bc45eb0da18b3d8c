"""OAuth clients: the apps and services an admin registered to ask for tokens (RFC 6749 §2).

A client is registered once, with everything the authorization server later checks a
request against: its type (RFC 6749 §2.1: a confidential client holds a secret, a public
one, a browser or mobile app, cannot), the redirect URIs it may be sent back to, compared
by exact string match (OAuth 2.1, RFC 9700 §4.1.3: no patterns, no prefixes), the grants
it may use and the scopes it may be given. Its secret is Tillbox's to make and is kept
only as a keyed digest (core/services/clients.py).
"""

from __future__ import annotations

import enum
import ipaddress
import re
import unicodedata
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import attrs

from core.domain.errors import ClientIsPublic, Invalid, ValidationFailed
from core.domain.scopes import SCOPES, parse_scopes

MAX_CLIENT_NAME_LENGTH = 100
MAX_REDIRECT_URIS = 10
MAX_REDIRECT_URI_LENGTH = 2000
#: What the plain secret a confidential client is given starts with (the rest: 256 random
#: bits, URL-safe): secret scanners and people can tell it from other credentials.
CLIENT_SECRET_PREFIX = "tbcs_"  # noqa: S105 - a prefix, not a secret
#: The hosts a redirect URI may name over plain http (RFC 8252 §7.3 and §8.3): the
#: machine itself, where a native app listens on a loopback port. Nowhere else: a code sent
#: over the network in clear can be read on the way.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "[::1]", "localhost"})


class ClientType(enum.StrEnum):
    CONFIDENTIAL = "confidential"  # a server that keeps a secret
    PUBLIC = "public"  # a browser or native app: anything it holds, its users can read


class ClientStatus(enum.StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"


class GrantType(enum.StrEnum):
    """The grants Tillbox serves (no implicit, no password grant), in the order they are shown."""

    AUTHORIZATION_CODE = "authorization_code"
    REFRESH_TOKEN = "refresh_token"  # noqa: S105 - a grant's name, not a secret
    CLIENT_CREDENTIALS = "client_credentials"


# Controls, line and paragraph separators, and the bidirectional overrides and isolates:
# a name is shown to users on the consent page, and these would let one read as another.
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_FORBIDDEN_NAME_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})

# RFC 3986's characters (unreserved, reserved and "%" of percent-encodings), less "#"
# and "*", which are refused with their own reason before this is asked.
_URI_CHARACTERS = re.compile(r"^[A-Za-z0-9\-._~:/?\[\]@!$&'()+,;=%]+$")
_HOST_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?)*$")
_PORT = re.compile(r"^[0-9]{1,5}$")


def check_client_name(name: str) -> str:
    """The name as kept and shown: trimmed; 1-100 characters; no control characters."""
    text = name.strip()
    if not text:
        raise ValidationFailed({"name": "must not be empty"})
    if len(text) > MAX_CLIENT_NAME_LENGTH:
        raise ValidationFailed({"name": f"must have at most {MAX_CLIENT_NAME_LENGTH} characters"})
    if any(unicodedata.category(c) in _FORBIDDEN_NAME_CATEGORIES or c in _BIDI_CONTROLS for c in text):
        raise ValidationFailed({"name": "cannot contain control characters"})
    return text


def redirect_uri_problem(uri: str) -> str | None:
    """Why ``uri`` cannot be a redirect URI, or None if it can.

    It is compared by exact string match when a client is sent back, so it must be one
    URI, whole and unambiguous: absolute, http(s), https unless the host is this machine's
    loopback (RFC 8252), no fragment (RFC 6749 §3.1.2), no user name or password (a URI
    that reads as one host and goes to another), no wildcard, no character a URI cannot
    hold (spaces, controls, non-ASCII: percent-encode them), at most 2000 characters.
    Scheme and host are lower case, so that the text compared is the URI's one spelling."""
    if not uri:
        return "must not be empty"
    if len(uri) > MAX_REDIRECT_URI_LENGTH:
        return f"must have at most {MAX_REDIRECT_URI_LENGTH} characters"
    if "#" in uri:
        return "must not have a fragment (#...)"
    if "*" in uri:
        return "must not have wildcards (*): it is compared exactly"
    if not _URI_CHARACTERS.fullmatch(uri):
        return "has characters a URI cannot hold (spaces, controls, non-ASCII): percent-encode them"
    scheme, colon, rest = uri.partition(":")
    if not colon or not scheme or not rest.startswith("//"):
        return "must be an absolute URI (https://host/path)"
    if scheme.lower() not in ("https", "http"):
        return "must be an https URI (http only on a loopback host: 127.0.0.1, [::1], localhost)"
    if scheme != scheme.lower():
        return "must have its scheme in lower case"
    authority = rest[2:].split("/", 1)[0].split("?", 1)[0]
    if "@" in authority:
        return "must not have a user name or password (...@)"
    host, port = _split_authority(authority)
    if host is None or port is None:
        return "must name a valid host (and port)"
    if host != host.lower():
        return "must have its host in lower case"
    if scheme == "http" and host not in LOOPBACK_HOSTS:
        return "must be https (http only on a loopback host: 127.0.0.1, [::1], localhost)"
    return None


def _split_authority(authority: str) -> tuple[str | None, str | None]:
    """(host, port) of an authority without userinfo: (None, None) if either is malformed;
    the port is "" when there is none."""
    if authority.startswith("["):
        literal, bracket, after = authority[1:].partition("]")
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            return None, None
        if not bracket or (after and not after.startswith(":")):
            return None, None
        host, port = f"[{literal}]", after[1:] if after else ""
    else:
        host, _, port = authority.partition(":")
        if not _HOST_NAME.fullmatch(host.lower()):
            return None, None
    if ":" in authority.rsplit("]", 1)[-1] and not port:
        return None, None  # "host:" with nothing after
    if port and (not _PORT.fullmatch(port) or not 0 < int(port) <= 65535):
        return None, None
    return host, port


def check_redirect_uris(uris: Sequence[str]) -> tuple[str, ...]:
    """1-10 redirect URIs, each one a redirect URI can be (redirect_uri_problem), none twice."""
    if not uris:
        raise ValidationFailed({"redirect_uris": "must have at least one redirect URI"})
    if len(uris) > MAX_REDIRECT_URIS:
        raise ValidationFailed({"redirect_uris": f"must have at most {MAX_REDIRECT_URIS} redirect URIs"})
    problems: dict[str, str] = {}
    seen: dict[str, int] = {}
    for index, uri in enumerate(uris):
        problem = redirect_uri_problem(uri)
        if problem is None and uri in seen:
            problem = f"repeats redirect_uris[{seen[uri]}]"
        if problem is not None:
            problems[f"redirect_uris[{index}]"] = problem
        seen.setdefault(uri, index)
    if problems:
        raise ValidationFailed(problems)
    return tuple(uris)


def check_grant_types(grant_types: Iterable[GrantType], client_type: ClientType) -> tuple[GrantType, ...]:
    """At least one grant; refresh_token only with authorization_code (a refresh token is
    issued with a code's tokens); client_credentials only for a confidential client (the
    grant is the secret). In GrantType's order, each once."""
    chosen = set(grant_types)
    if not chosen:
        raise ValidationFailed({"grant_types": "must have at least one grant type"})
    if GrantType.REFRESH_TOKEN in chosen and GrantType.AUTHORIZATION_CODE not in chosen:
        raise ValidationFailed({"grant_types": "refresh_token needs authorization_code"})
    if GrantType.CLIENT_CREDENTIALS in chosen and client_type is ClientType.PUBLIC:
        raise ValidationFailed({"grant_types": "client_credentials is only for confidential clients"})
    return tuple(grant for grant in GrantType if grant in chosen)


def check_client_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """At least one scope, each one of core/domain/scopes.py's; in SCOPES' order, each once."""
    try:
        chosen = parse_scopes(list(scopes))
    except Invalid as exc:
        unknown = ", ".join(exc.details.get("unknown", []))
        raise ValidationFailed({"scopes": f"has unknown scopes: {unknown}"}) from None
    if not chosen:
        raise ValidationFailed({"scopes": "must have at least one scope"})
    return tuple(name for name in SCOPES if name in chosen)


def _collect(checks: dict[str, Any]) -> dict[str, Any]:
    """Run every check (field -> callable) and refuse at once with every field's problem."""
    values: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for field, check in checks.items():
        try:
            values[field] = check()
        except ValidationFailed as exc:
            problems.update(exc.details["fields"])
    if problems:
        raise ValidationFailed(problems)
    return values


@attrs.define
class OAuthClient:
    id: str
    name: str
    type: ClientType
    redirect_uris: tuple[str, ...]
    grant_types: tuple[GrantType, ...]
    scopes: tuple[str, ...]  # the most a token of this client may be given, in SCOPES' order
    status: ClientStatus
    # The keyed digest of a confidential client's secret; None for a public client.
    secret_digest: str | None
    secret_rotated_at: datetime | None  # when the current secret was made; None for a public client
    created_at: datetime
    updated_at: datetime
    created_by: str | None  # the admin's user id; None: the operator at the command line

    @classmethod
    def register(
        cls,
        *,
        id: str,
        name: str,
        type: ClientType,
        redirect_uris: Sequence[str],
        grant_types: Iterable[GrantType],
        scopes: Iterable[str],
        secret_digest: str | None,
        at: datetime,
        created_by: str | None,
    ) -> OAuthClient:
        """A new, active client; ValidationFailed naming every field that is wrong."""
        if (secret_digest is None) != (type is ClientType.PUBLIC):
            raise ValueError("a confidential client has a secret digest, a public one none")
        values = _collect(
            {
                "name": lambda: check_client_name(name),
                "redirect_uris": lambda: check_redirect_uris(redirect_uris),
                "grant_types": lambda: check_grant_types(grant_types, type),
                "scopes": lambda: check_client_scopes(scopes),
            }
        )
        return cls(
            id=id,
            type=type,
            status=ClientStatus.ACTIVE,
            secret_digest=secret_digest,
            secret_rotated_at=None if secret_digest is None else at,
            created_at=at,
            updated_at=at,
            created_by=created_by,
            **values,
        )

    @property
    def is_active(self) -> bool:
        return self.status is ClientStatus.ACTIVE

    @property
    def is_confidential(self) -> bool:
        return self.type is ClientType.CONFIDENTIAL

    def update(
        self,
        *,
        at: datetime,
        name: str | None = None,
        redirect_uris: Sequence[str] | None = None,
        grant_types: Iterable[GrantType] | None = None,
        scopes: Iterable[str] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Change the fields given (None: left as is), all or none: ValidationFailed naming
        every field that is wrong, and nothing changed. What changed, as {field: {"before",
        "after"}} (empty: nothing did, and updated_at stays)."""
        checks: dict[str, Any] = {}
        if name is not None:
            checks["name"] = lambda: check_client_name(name)
        if redirect_uris is not None:
            checks["redirect_uris"] = lambda: check_redirect_uris(redirect_uris)
        if grant_types is not None:
            checks["grant_types"] = lambda: check_grant_types(grant_types, self.type)
        if scopes is not None:
            checks["scopes"] = lambda: check_client_scopes(scopes)
        values = _collect(checks)
        changes = {
            field: {"before": _plain(getattr(self, field)), "after": _plain(value)}
            for field, value in values.items()
            if getattr(self, field) != value
        }
        if changes:
            for field in changes:
                setattr(self, field, values[field])
            self.updated_at = at
        return changes

    def disable(self, *, at: datetime) -> bool:
        """Tokens are no longer issued to it and its secret no longer authenticates it.
        False if it was disabled already (nothing changed)."""
        return self._set_status(ClientStatus.DISABLED, at)

    def enable(self, *, at: datetime) -> bool:
        """False if it was active already (nothing changed)."""
        return self._set_status(ClientStatus.ACTIVE, at)

    def _set_status(self, status: ClientStatus, at: datetime) -> bool:
        if self.status is status:
            return False
        self.status = status
        self.updated_at = at
        return True

    def rotate_secret(self, secret_digest: str, *, at: datetime) -> None:
        """The new secret's digest replaces the old one, which stops working at once.
        ClientIsPublic for a public client."""
        if not self.is_confidential:
            raise ClientIsPublic()
        self.secret_digest = secret_digest
        self.secret_rotated_at = at
        self.updated_at = at

    # For the authorization and token endpoints.
    def allows_redirect_uri(self, uri: str) -> bool:
        """Exact string match against a registered URI (no normalization, no prefixes)."""
        return uri in self.redirect_uris

    def allows_grant(self, grant: GrantType) -> bool:
        return grant in self.grant_types

    def allows_scopes(self, requested: Iterable[str]) -> bool:
        """Whether every requested scope is among the client's (a token gets at most those)."""
        return set(requested) <= set(self.scopes)


def _plain(value: Any) -> Any:
    """A field's value as the audit log keeps it (JSON: lists of strings)."""
    if isinstance(value, tuple):
        return [str(item) for item in value]
    return value

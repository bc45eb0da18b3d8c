"""The OAuth 2 authorization server: authlib's server parts, speaking to Tillbox's services.

authlib parses and checks the protocol (RFC 6749 grants, RFC 7636 PKCE, RFC 7009 revocation,
RFC 7662 introspection, client authentication) and words its errors; every decision about
the store is core/services/oauth.py's. authlib's server is synchronous and calls back into
the store, which is asynchronous: a request is handled in a small pool of threads of its own
(``OAuthServer.run``), whose callbacks hand their store work to the event loop and wait for
it (``_Bridge``). The loop is never blocked, and a flood of token requests waits for a thread
rather than for the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, TypeVar

from authlib.oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import (
    AccessDeniedError,
    ClientMixin,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
    OAuth2Payload,
    OAuth2Request,
    TokenMixin,
)
from authlib.oauth2.rfc6749.grants import (
    AuthorizationCodeGrant,
    BaseGrant,
    ClientCredentialsGrant,
    RefreshTokenGrant,
)
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint

from core.domain.errors import DomainError, TokenInvalid
from core.domain.grants import AuthorizationCode
from core.domain.oauth import GrantType, OAuthClient
from core.domain.scopes import SCOPES, format_scopes
from core.domain.users import User
from core.services.auth import AuthService, RefreshSession, TokenPair
from core.services.clients import ClientService
from core.services.oauth import GrantCode, OAuthService, TokenInfo

T = TypeVar("T")

#: Threads that run authlib's request handling (each mostly waits for the store).
THREADS = 4
#: How long a callback waits for its store work: a store that does not answer in this time
#: answers the request 503 (the loop is never blocked meanwhile).
BRIDGE_TIMEOUT_SECONDS = 10.0
#: Requests waiting for a thread at most; more are answered 503 at once (a flood of token
#: requests must not queue without end, nor keep the authorization page waiting behind it).
MAX_WAITING = 64

_TOKEN_HEADERS = [("Content-Type", "application/json"), ("Cache-Control", "no-store"), ("Pragma", "no-cache")]


class _StoreTooSlow(Exception):
    """The store did not answer a callback in BRIDGE_TIMEOUT_SECONDS."""


class _Bridge:
    """Runs a coroutine on the event loop from one of the server's threads, and waits for it."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop

    def __call__(self, work: Awaitable[T]) -> T:
        future = asyncio.run_coroutine_threadsafe(_awaited(work), self._loop)
        try:
            return future.result(BRIDGE_TIMEOUT_SECONDS)
        except concurrent.futures.TimeoutError:
            future.cancel()  # a unit of work cancelled before its commit keeps nothing
            raise _StoreTooSlow() from None


async def _awaited(work: Awaitable[T]) -> T:
    return await work


class Client(ClientMixin):
    """An OAuthClient as authlib asks about it."""

    def __init__(self, client: OAuthClient, clients: ClientService):
        self.client = client
        self._clients = clients

    def get_client_id(self) -> str:
        return self.client.id

    def get_default_redirect_uri(self) -> None:
        return None  # every authorization request names its redirect URI (OAuth 2.1)

    def get_allowed_scope(self, scope: str | None) -> str | None:
        # Only what the client was registered for; anything else is invalid_scope, not dropped.
        asked = set((scope or "").split())
        if not asked or not asked <= set(self.client.scopes):
            return None
        return format_scopes(asked)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return self.client.allows_redirect_uri(redirect_uri)  # the exact string, nothing else

    def check_client_secret(self, client_secret: str) -> bool:
        return self._clients.secret_matches(self.client, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.client.is_confidential:
            return method in ("client_secret_basic", "client_secret_post")
        # A public client has no secret: its code exchange is bound by PKCE instead. It may
        # refresh and revoke its own tokens; introspection is for confidential clients.
        return method == "none" and endpoint != "introspection"

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and self.client.allows_grant(GrantType.AUTHORIZATION_CODE)

    def check_grant_type(self, grant_type: str) -> bool:
        try:
            return self.client.allows_grant(GrantType(grant_type))
        except ValueError:
            return False


class _Code:
    """An authorization code as authlib's grant and PKCE extension read it."""

    code_challenge_method = "S256"

    def __init__(self, record: AuthorizationCode):
        self.record = record
        self.code_challenge = record.code_challenge

    def get_redirect_uri(self) -> str:
        return self.record.redirect_uri

    def get_scope(self) -> str:
        return self.record.scope


class _Token(TokenMixin):
    """A token a client presented to the refresh, revocation or introspection endpoint."""

    def __init__(self, text: str, client_id: str | None, scope: str | None, info: TokenInfo | None = None):
        self.text = text
        self.client_id = client_id
        self.scope = scope
        self.info = info

    def check_client(self, client: Client) -> bool:
        return self.client_id == client.get_client_id()

    def get_scope(self) -> str | None:
        return self.scope

    def is_expired(self) -> bool:
        return False  # the services decide, at the moment they act

    def is_revoked(self) -> bool:
        return False


class S256Only(CodeChallenge):
    """PKCE for every client, S256 only: a request without a challenge, or with ``plain``
    (or no method, which RFC 7636 reads as plain), is refused."""

    SUPPORTED_CODE_CHALLENGE_METHOD: ClassVar[list[str]] = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant: BaseGrant, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: send code_challenge and code_challenge_method=S256.")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("Only code_challenge_method=S256 is supported.")
        super().validate_code_challenge(grant, redirect_uri)


class _Grants:
    """What the grants and endpoints need of the services, through the bridge."""

    def __init__(self, bridge: _Bridge, oauth: OAuthService, auth: AuthService, clients: ClientService):
        self.bridge = bridge
        self.oauth = oauth
        self.auth = auth
        self.clients = clients


class CodeGrant(AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ["client_secret_basic", "client_secret_post", "none"]
    server: TillboxAuthorizationServer

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        grants = self.server.grants
        grants.bridge(
            grants.oauth.grant_code(
                GrantCode(
                    user=request.user,
                    client=request.client.client,
                    redirect_uri=request.payload.redirect_uri,
                    # What the user approved (set by OAuthServer.authorize): authlib validates the
                    # request again on its way here and resets request.scope to what was asked.
                    scopes=request.granted_scopes,
                    code_challenge=request.payload.data["code_challenge"],
                    code=code,
                    source_ip=getattr(request, "source_ip", None),
                )
            )
        )

    def query_authorization_code(self, code: str, client: Client) -> _Code | None:
        grants = self.server.grants
        record = grants.bridge(grants.oauth.find_code(code, client.client))
        return _Code(record) if record is not None else None

    def delete_authorization_code(self, authorization_code: _Code) -> None:
        pass  # spent by the exchange itself (exchange_code), in the transaction of the session

    def authenticate_user(self, authorization_code: _Code) -> str:
        return authorization_code.record.user_id

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        grants = self.server.grants
        code: _Code = self.request.authorization_code
        pair = grants.bridge(_grant_refused(grants.oauth.exchange_code(code.record, self.request.client.client)))
        return 200, _token_body(pair), _TOKEN_HEADERS


class RefreshGrant(RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ["client_secret_basic", "client_secret_post", "none"]
    INCLUDE_NEW_REFRESH_TOKEN = True
    server: TillboxAuthorizationServer

    def authenticate_refresh_token(self, refresh_token: str) -> _Token | None:
        grants = self.server.grants
        record = grants.bridge(grants.auth.refresh_record(refresh_token))
        if record is None or record.client_id is None:
            return None
        # A used or revoked one is returned too: AuthService.refresh decides, and a used
        # one presented again ends its whole session (the first-party rule).
        return _Token(refresh_token, record.client_id, record.scope)

    def authenticate_user(self, refresh_token: _Token) -> str:
        return "user"  # the session knows its user; AuthService.refresh reads it

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        grants = self.server.grants
        token: _Token = self.request.refresh_token
        asked = self.request.payload.scope
        command = RefreshSession(
            refresh_token=token.text,
            source_ip=getattr(self.request, "source_ip", None),
            client_id=self.request.client.get_client_id(),
            scopes=frozenset(asked.split()) if asked else None,
        )
        pair = grants.bridge(_grant_refused(grants.auth.refresh(command)))
        return 200, _token_body(pair), _TOKEN_HEADERS


class CredentialsGrant(ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ["client_secret_basic", "client_secret_post"]
    server: TillboxAuthorizationServer

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        client: Client = self.request.client
        asked = self.request.payload.scope
        scopes = frozenset(asked.split()) if asked else None
        if scopes is not None and not scopes <= set(client.client.scopes):
            raise InvalidScopeError()
        grants = self.server.grants
        pair = grants.bridge(_grant_refused(grants.oauth.client_credentials(client.client, scopes)))
        return 200, _token_body(pair), _TOKEN_HEADERS


class Revocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS: ClassVar[list[str]] = ["client_secret_basic", "client_secret_post", "none"]
    server: TillboxAuthorizationServer

    def authenticate_token(self, request: OAuth2Request, client: Client) -> _Token:
        # Whose the token is, OAuthService.revoke decides (in one lookup): a token of another
        # client, or none at all, is not revoked, and the answer is the same 200 (RFC 7009
        # §2.2; authlib would say invalid_grant, which tells the caller the token exists).
        self.check_params(request, client)
        return _Token(request.form["token"], client.get_client_id(), None)

    def revoke_token(self, token: _Token, request: OAuth2Request) -> None:
        self.server.grants.bridge(self.server.grants.oauth.revoke(request.client.client, token.text))


class Introspection(IntrospectionEndpoint):
    CLIENT_AUTH_METHODS: ClassVar[list[str]] = ["client_secret_basic", "client_secret_post"]
    server: TillboxAuthorizationServer

    def query_token(self, token_string: str, token_type_hint: str | None) -> _Token | None:
        grants = self.server.grants
        client = self.server.current_client
        info = grants.bridge(grants.oauth.introspect(client, token_string)) if client is not None else None
        return _Token(token_string, info.client_id, info.scope, info) if info is not None else None

    def authenticate_endpoint_client(self, request: OAuth2Request) -> Client:
        client: Client = super().authenticate_endpoint_client(request)
        self.server.current_client = client.client
        return client

    def check_permission(self, token: _Token, client: Client, request: OAuth2Request) -> bool:
        return token.check_client(client)  # another client's token is "active": false

    def introspect_token(self, token: _Token) -> dict[str, Any]:
        info = token.info
        assert info is not None
        return {
            "active": True,
            "scope": info.scope,
            "client_id": info.client_id,
            "sub": info.user_id,
            **({"token_type": "Bearer"} if info.kind == "access_token" else {}),  # RFC 6749 §7.1 types
            "exp": info.expires_at,
            **({"iat": info.issued_at} if info.issued_at is not None else {}),
        }


async def _grant_refused(work: Awaitable[T]) -> T:
    """The services' refusal of a code or refresh token, in RFC 6749's words."""
    try:
        return await work
    except DomainError as error:
        if error.code == "invalid_scope":
            raise InvalidScopeError(error.message) from None
        if isinstance(error, TokenInvalid) or error.code in ("invalid_grant", "refresh_token_reused"):
            raise InvalidGrantError(error.message) from None
        raise


def _token_body(pair: TokenPair) -> dict[str, Any]:
    body: dict[str, Any] = {
        "access_token": pair.access_token,
        "token_type": "Bearer",
        "expires_in": pair.expires_in,
        "scope": pair.scope or "",
    }
    if pair.refresh_token:
        body["refresh_token"] = pair.refresh_token
    return body


class _Payload(OAuth2Payload):
    def __init__(self, values: Mapping[str, list[str]]):
        self._datalist = defaultdict(list, {key: list(items) for key, items in values.items()})
        self._data = {key: items[0] for key, items in values.items() if items}

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._datalist


class Incoming(OAuth2Request):
    """An HTTP request as authlib reads it: its form (token endpoints) or query (the
    authorization endpoint) as the payload, its headers for client authentication."""

    def __init__(self, method: str, headers: Mapping[str, str], values: Mapping[str, list[str]], source_ip: str | None):
        # authlib refuses a URI that is not https: TLS ends at the proxy in front (README,
        # "Running it"), which this process cannot see; the URI itself is not used.
        super().__init__(method, "https://tillbox.invalid/oauth", headers=dict(headers))
        # A response or grant type that is not one is unsupported whatever its characters;
        # authlib quotes it in its error, which RFC 6749 allows only in printable ASCII.
        values = {
            key: [item if key not in _NAMED_TYPES or _PRINTABLE.match(item) else "unsupported" for item in items]
            for key, items in values.items()
        }
        self.payload = _Payload(values)
        self._values = {key: items[0] for key, items in values.items() if items}
        self.source_ip = source_ip
        self.granted_scopes: frozenset[str] = frozenset()

    @property
    def form(self) -> dict[str, str]:
        return self._values

    @property
    def args(self) -> dict[str, str]:
        return self._values


Answer = tuple[int, Any, list[tuple[str, str]]]

_NAMED_TYPES = frozenset({"response_type", "grant_type", "token_type_hint"})
_PRINTABLE = re.compile(r"^[\x20\x21\x23-\x5b\x5d-\x7e]*$")  # RFC 6749's error_description characters

#: What authlib raises when it would quote a value RFC 6749 forbids in an error_description
#: (a `\`, a `"`, a control or non-ASCII character in a redirect URI or a response type).
_UNQUOTABLE = "Error description contains forbidden characters"


def _quotable(handle: Callable[[TillboxAuthorizationServer], T], server: TillboxAuthorizationServer) -> T:
    """``handle``, with a refusal authlib could not word made invalid_request (never redirected)."""
    try:
        return handle(server)
    except ValueError as error:
        if not str(error).startswith(_UNQUOTABLE):
            raise
        raise InvalidRequestError("A parameter holds characters that OAuth 2 does not allow there.") from None


def _busy() -> OAuth2Error:
    error = OAuth2Error("The authorization server is busy; try again shortly.", status_code=503)
    error.error = "temporarily_unavailable"
    return error


def _answer(error: OAuth2Error) -> Answer:
    status, body, headers = error()
    answer = list(headers)
    if status == 503:
        answer.append(("Retry-After", "1"))
    return status, body, answer


class TillboxAuthorizationServer(AuthorizationServer):
    def __init__(self, grants: _Grants):
        super().__init__(scopes_supported=list(SCOPES))
        self.grants = grants
        self.current_client: OAuthClient | None = None
        self.register_grant(CodeGrant, [S256Only(required=True)])
        self.register_grant(RefreshGrant)
        self.register_grant(CredentialsGrant)
        self.register_endpoint(Revocation)
        self.register_endpoint(Introspection)

    def query_client(self, client_id: str) -> Client | None:
        client = self.grants.bridge(self.grants.clients.find(client_id))
        if client is None or not client.is_active:
            return None
        return Client(client, self.grants.clients)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        pass  # the grants save what they issue, in the transaction that issues it

    def create_oauth2_request(self, request: Incoming) -> Incoming:
        return request

    def handle_response(self, status: int, body: Any, headers: list[tuple[str, str]]) -> Answer:
        return status, body, list(headers)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass


class OAuthServer:
    """The authorization server of one event loop: runs authlib's handling in its threads."""

    def __init__(self, oauth: OAuthService, auth: AuthService, clients: ClientService):
        self.oauth = oauth
        self.auth = auth
        self.clients = clients
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="oauth")
        self._in_flight = 0

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def run(self, handle: Callable[[TillboxAuthorizationServer], T]) -> T:
        """``handle`` with a server of its own (authlib keeps per-request state on it)."""
        if self._in_flight >= THREADS + MAX_WAITING:
            raise _busy()
        loop = asyncio.get_running_loop()
        server = TillboxAuthorizationServer(_Grants(_Bridge(loop), self.oauth, self.auth, self.clients))
        self._in_flight += 1
        try:
            return await loop.run_in_executor(self._pool, _quotable, handle, server)
        except _StoreTooSlow:
            raise _busy() from None
        finally:
            self._in_flight -= 1

    async def token(self, request: Incoming) -> Answer:
        if not request.form.get("grant_type"):  # RFC 6749 §5.2: a required parameter is missing
            return _answer(InvalidRequestError("Missing 'grant_type' in request."))
        return await self._answered(lambda server: server.create_token_response(request))

    async def revoke(self, request: Incoming) -> Answer:
        return await self._answered(lambda server: server.create_endpoint_response("revocation", request))

    async def introspect(self, request: Incoming) -> Answer:
        return await self._answered(lambda server: server.create_endpoint_response("introspection", request))

    async def _answered(self, handle: Callable[[TillboxAuthorizationServer], Answer]) -> Answer:
        try:
            return await self.run(handle)
        except OAuth2Error as error:
            return _answer(error)

    async def check_authorization(self, request: Incoming) -> tuple[OAuthClient, str, frozenset[str]]:
        """The client, redirect URI and scopes of a valid authorization request; OAuth2Error
        otherwise (with ``redirect_uri`` set when the error may be sent back to the client)."""

        def check(server: TillboxAuthorizationServer) -> tuple[OAuthClient, str, frozenset[str]]:
            grant = server.get_consent_grant(request=request, end_user=None)
            return grant.request.client.client, grant.redirect_uri, frozenset(grant.request.scope.split())

        return await self.run(check)

    async def authorize(self, request: Incoming, user: User | None, scopes: frozenset[str]) -> Answer:
        """The redirect back to the client: with a code for ``user`` (its consent recorded),
        or access_denied for None."""

        def respond(server: TillboxAuthorizationServer) -> Answer:
            try:
                grant = server.get_consent_grant(request=request, end_user=user)
                request.granted_scopes = scopes
                return server.create_authorization_response(request=request, grant_user=user, grant=grant)
            except OAuth2Error as error:
                return server.handle_error_response(request, error)

        try:
            return await self.run(respond)
        except OAuth2Error as error:  # one that could not be worded: never sent to the client
            return _answer(error)


__all__ = ["AccessDeniedError", "Incoming", "OAuth2Error", "OAuthServer"]

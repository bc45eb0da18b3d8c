"""The OAuth 2 authorization server's endpoints: the authorization page, token, revocation,
introspection, and the server's metadata (RFC 8414).

The page is rendered here, without JavaScript, under the CSP of /docs. A form carries a CSRF
token that must match a cookie set with the page (SameSite=Strict); the user signs in on it
(throttled and audited as the API's login), then approves or denies what the client asks,
unless they approved as much for that client before. Errors the client may hear go back to
its redirect URI; a request whose client or redirect URI is unknown is never redirected, it
is shown.
"""

from __future__ import annotations

import hmac
import html
import json
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from multidict import MultiMapping

from core.domain.errors import DomainError
from core.domain.oauth import OAuthClient
from core.domain.scopes import SCOPES, format_scopes
from core.domain.users import User
from core.services.auth import LogIn
from entrypoints.http.api import Api, Input, Reply, json_response
from entrypoints.http.envelope import DOCS_CSP
from entrypoints.http.keys import AUTH, CLIENT_ADDRESS, DIGESTS, ISSUER, OAUTH, REQUEST_ID
from entrypoints.http.middlewares import error_response
from entrypoints.http.oauth import Incoming, OAuth2Error

api = Api()

CSRF_COOKIE = "tillbox_oauth_csrf"
#: The fields of the page's own forms: never passed on as the authorization request's.
_PAGE_FIELDS = frozenset({"csrf", "email", "password", "decision", "ticket"})
#: How long the consent step may wait after the sign-in.
TICKET_SECONDS = 600
_FORM = "application/x-www-form-urlencoded"


def _form_reply(description: str) -> tuple[Reply, ...]:
    return (
        Reply(200, description, {"type": "object"}),
        Reply(400, "An RFC 6749 §5.2 error: `invalid_request`, `invalid_grant`, `unsupported_grant_type`, …"),
        Reply(401, "`invalid_client`: the client did not authenticate."),
    )


@api.operation(
    "GET",
    "/oauth/authorize",
    summary="The authorization page (RFC 6749 §4.1, PKCE S256 required)",
    tag="oauth",
    auth="none",
    protocol=True,
    replies=(
        Reply(200, "The page where the user signs in and approves.", {"type": "string"}, media_type="text/html"),
        Reply(302, "Back to the client's redirect URI, with an error (RFC 6749 §4.1.2.1)."),
        Reply(400, "An unknown client or redirect URI: shown, never redirected to.", media_type="text/html"),
    ),
)
async def authorize_page(request: web.Request, i: Input) -> web.StreamResponse:
    values = {key: items for key, items in _values(request.rel_url.query).items() if key not in _PAGE_FIELDS}
    incoming = Incoming("GET", request.headers, values, request[CLIENT_ADDRESS])
    try:
        client, redirect_uri, scopes = await request.app[OAUTH].check_authorization(incoming)
    except OAuth2Error as error:
        return _protocol_error(error)
    csrf = secrets.token_urlsafe(32)
    response = _page(_sign_in(client, scopes, values, csrf, message=None), redirect_uri)
    secure = _secure_cookie(request)
    response.set_cookie(
        _csrf_cookie(secure),
        csrf,
        httponly=True,
        samesite="Strict",
        secure=secure,
        path="/oauth/authorize",
        max_age=TICKET_SECONDS,
    )
    return response


def _secure_cookie(request: web.Request) -> bool:
    """Secure, unless this is plain http to a loopback address (a shop trying Tillbox on its
    own machine, the tests): TLS ends at the proxy in front, which this process cannot see,
    so request.secure would be false behind it. A Secure cookie over plain http elsewhere is
    not sent back, and the form is refused: that fails safe."""
    if request.secure:
        return True
    return request.url.host not in ("127.0.0.1", "localhost", "::1", "[::1]")


def _csrf_cookie(secure: bool) -> str:
    # The __Secure- prefix: a browser takes such a cookie only if it was set Secure, so a
    # sibling site or a network attacker on plain http cannot plant one.
    return "__Secure-" + CSRF_COOKIE if secure else CSRF_COOKIE


@api.operation(
    "POST",
    "/oauth/authorize",
    summary="The authorization page's forms: sign in, approve or deny",
    tag="oauth",
    auth="none",
    protocol=True,
    idempotent=False,
    replies=(
        Reply(302, "Back to the client's redirect URI, with a code (and `state`) or an error."),
        Reply(200, "The next step of the page (approve or deny).", {"type": "string"}, media_type="text/html"),
        Reply(403, "The form's CSRF token does not match its cookie.", media_type="text/html"),
    ),
)
async def authorize_decision(request: web.Request, i: Input) -> web.StreamResponse:
    form = _values(await request.post())
    csrf = _one(form, "csrf")
    cookie = request.cookies.get(_csrf_cookie(_secure_cookie(request)), "")
    if not csrf or not cookie or not hmac.compare_digest(csrf.encode(), cookie.encode()):
        return _message_page(403, "This form has expired or was not sent from this page. Start again from the app.")
    values = {key: items for key, items in form.items() if key not in _PAGE_FIELDS}
    source_ip = request[CLIENT_ADDRESS]
    incoming = Incoming("POST", request.headers, values, source_ip)
    server = request.app[OAUTH]
    try:
        client, redirect_uri, asked = await server.check_authorization(incoming)
    except OAuth2Error as error:
        return _protocol_error(error)
    ticket = _one(form, "ticket")
    user: User | None = None
    if ticket:
        user = await _ticket_user(request, ticket, values, csrf)
        if user is None:
            return _message_page(403, "This approval has expired. Start again from the app.")
    if _one(form, "decision") != "approve":
        if user is not None:  # signed in, then denied: the user's decision, audited
            await server.oauth.record_denial(user, client, source_ip)
        return _redirect(await server.authorize(incoming, None, frozenset()))
    if ticket:
        assert user is not None
    else:
        try:
            user = await request.app[AUTH].sign_in_to_authorize(
                LogIn(email=_one(form, "email") or "", password=_one(form, "password") or "", source_ip=source_ip)
            )
        except DomainError as error:
            page = _page(_sign_in(client, asked, values, csrf, message=error.message), redirect_uri)
            problem = error_response(request, request[REQUEST_ID], error)
            page.set_status(problem.status)
            if "Retry-After" in problem.headers:
                page.headers["Retry-After"] = problem.headers["Retry-After"]
            return page
    scopes = server.oauth.grantable(user, client, asked)
    if not scopes:  # nothing the account may give: as if denied
        return _redirect(await server.authorize(incoming, None, frozenset()))
    if ticket and _ticket_scopes(ticket) != format_scopes(scopes):
        # The role or the client changed since the page showed what it asks: show it again.
        return _message_page(403, "What this app may be given has changed. Start again from the app.")
    if ticket or not await server.oauth.needs_consent(user, client, scopes):
        return _redirect(await server.authorize(incoming, user, scopes))
    return _page(_consent(client, scopes, values, csrf, _ticket(request, user, values, csrf, scopes)), redirect_uri)


@api.operation(
    "POST",
    "/oauth/token",
    summary="Token endpoint: authorization_code (with code_verifier), refresh_token, client_credentials",
    tag="oauth",
    auth="none",
    protocol=True,
    idempotent=False,
    replies=_form_reply("The tokens (RFC 6749 §5.1): `access_token`, `token_type`, `expires_in`, `scope`, …"),
)
async def token(request: web.Request, i: Input) -> web.StreamResponse:
    return await _endpoint(request, request.app[OAUTH].token)


@api.operation(
    "POST",
    "/oauth/revoke",
    summary="Revoke a refresh or access token (RFC 7009)",
    tag="oauth",
    auth="none",
    protocol=True,
    idempotent=False,
    replies=_form_reply("Revoked, or nothing to revoke (the same answer)."),
)
async def revoke(request: web.Request, i: Input) -> web.StreamResponse:
    return await _endpoint(request, request.app[OAUTH].revoke)


@api.operation(
    "POST",
    "/oauth/introspect",
    summary="What a token of the calling client is (RFC 7662; confidential clients)",
    tag="oauth",
    auth="none",
    protocol=True,
    idempotent=False,
    replies=_form_reply("`active`, and for an active token `scope`, `client_id`, `sub`, `exp`, `iat`."),
)
async def introspect(request: web.Request, i: Input) -> web.StreamResponse:
    return await _endpoint(request, request.app[OAUTH].introspect)


@api.operation(
    "GET",
    "/.well-known/oauth-authorization-server",
    summary="The authorization server's metadata (RFC 8414)",
    tag="oauth",
    auth="none",
    replies=(Reply(200, "Endpoints, grants, scopes and methods supported.", {"type": "object"}),),
)
async def metadata(request: web.Request, i: Input) -> web.Response:
    # RFC 8414 §3.3 and RFC 9068: the issuer here is the tokens' iss. A shop that gives
    # auth.issuer its public https URL has both agree; left at its default (a name, not a
    # URL), the document names this host, for trying things out.
    issuer = request.app[ISSUER]
    base = issuer.rstrip("/") if issuer.startswith(("https://", "http://")) else f"{request.scheme}://{request.host}"
    return json_response(
        {
            "issuer": base,
            "authorization_endpoint": base + "/oauth/authorize",
            "token_endpoint": base + "/oauth/token",
            "revocation_endpoint": base + "/oauth/revoke",
            "introspection_endpoint": base + "/oauth/introspect",
            "jwks_uri": base + "/.well-known/jwks.json",
            "scopes_supported": list(SCOPES),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        },
        # Built from the request's host: never kept by a shared cache for another host.
        headers={"Cache-Control": "no-cache", "Vary": "Host"},
    )


# The endpoints' plumbing.
async def _endpoint(request: web.Request, handle: Any) -> web.Response:
    if request.content_type != _FORM:
        body = {"error": "invalid_request", "error_description": f"Send the parameters as {_FORM}."}
        return web.json_response(body, status=400, headers={"Cache-Control": "no-store"})
    values = _values(await request.post())
    status, body, headers = await handle(Incoming("POST", request.headers, values, request[CLIENT_ADDRESS]))
    text = body if isinstance(body, str) else json.dumps(body)
    response = web.Response(status=status, text=text, content_type="application/json")
    for name, value in headers:
        if name.lower() != "content-type":
            response.headers[name] = value
    response.headers["Cache-Control"] = "no-store"
    return response


def _values(data: MultiMapping[Any]) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for key, value in data.items():
        if isinstance(value, str):
            values.setdefault(key, []).append(value)
    return values


def _one(values: dict[str, list[str]], name: str) -> str | None:
    items = values.get(name)
    return items[0] if items else None


def _redirect(answer: tuple[int, Any, list[tuple[str, str]]]) -> web.StreamResponse:
    status, body, headers = answer
    location = dict(headers).get("Location")
    if status == 302 and location:
        return web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})
    return _message_page(status, _describe(body))


def _protocol_error(error: OAuth2Error) -> web.StreamResponse:
    if error.redirect_uri:  # the client and its redirect URI are known: the error goes back there
        status, body, headers = error()
        return _redirect((status, body, headers))
    if error.status_code == 503:
        return _message_page(503, "The server is busy; try again in a moment.")
    return _message_page(400, f"This authorization request cannot be served: {error.description or error.error}")


def _describe(body: Any) -> str:
    if isinstance(body, list):
        body = dict(body)
    if isinstance(body, dict):
        return str(body.get("error_description") or body.get("error") or "The request was refused.")
    return "The request was refused."


# The ticket of the consent step: who signed in, for which request, in which browser (its
# CSRF token), approving which scopes (those shown), until when; under the server's key.
def _ticket(request: web.Request, user: User, values: dict[str, list[str]], csrf: str, scopes: frozenset[str]) -> str:
    expires = int(time.time()) + TICKET_SECONDS
    scope = format_scopes(scopes).replace(" ", "+")
    return f"{user.id}.{expires}.{scope}.{_ticket_mac(request, user.id, expires, scope, values, csrf)}"


def _ticket_scopes(ticket: str) -> str:
    return ticket.split(".")[2].replace("+", " ") if ticket.count(".") == 3 else ""


async def _ticket_user(request: web.Request, ticket: str, values: dict[str, list[str]], csrf: str) -> User | None:
    parts = ticket.split(".")
    if len(parts) != 4:
        return None
    user_id, expires, scope, mac = parts
    if not expires.isdigit() or int(expires) < time.time():
        return None
    if not hmac.compare_digest(mac, _ticket_mac(request, user_id, int(expires), scope, values, csrf)):
        return None
    return await request.app[OAUTH].oauth.active_user(user_id)


def _ticket_mac(
    request: web.Request, user_id: str, expires: int, scope: str, values: dict[str, list[str]], csrf: str
) -> str:
    request_text = json.dumps(sorted(values.items()), separators=(",", ":"))
    message = f"oauth-consent\0{user_id}\0{expires}\0{scope}\0{csrf}\0{request_text}"
    return request.app[DIGESTS].digest(message.encode())


# The page.
_STYLE = """
body { font: 16px/1.5 system-ui, sans-serif; max-width: 32rem; margin: 3rem auto; padding: 0 1rem; color: #222; }
h1 { font-size: 1.4rem; } ul { padding-left: 1.2rem; } label { display: block; margin-top: .8rem; }
input[type=email], input[type=password] { width: 100%; padding: .4rem; font-size: 1rem; }
.buttons { margin-top: 1.2rem; display: flex; gap: .8rem; } button { padding: .5rem 1.2rem; font-size: 1rem; }
.message { background: #fde8e8; border: 1px solid #e0a0a0; padding: .6rem; }
"""


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _hidden(values: dict[str, list[str]], csrf: str) -> str:
    fields = [f'<input type=hidden name="{_e(k)}" value="{_e(v)}">' for k, items in values.items() for v in items]
    fields.append(f'<input type=hidden name=csrf value="{_e(csrf)}">')
    return "\n".join(fields)


def _asks(client: OAuthClient, scopes: frozenset[str]) -> str:
    items = "".join(
        f"<li>{_e(words)} <small>({_e(name)})</small></li>" for name, words in SCOPES.items() if name in scopes
    )
    return f"<h1>{_e(client.name)} wants to use your account</h1><p>It asks to:</p><ul>{items}</ul>"


def _sign_in(
    client: OAuthClient, scopes: frozenset[str], values: dict[str, list[str]], csrf: str, message: str | None
) -> str:
    problem = f"<p class=message role=alert>{_e(message)}</p>" if message else ""
    return f"""{_asks(client, scopes)}
{problem}
<form method=post action="/oauth/authorize">
{_hidden(values, csrf)}
<label>Email <input type=email name=email autocomplete=username required></label>
<label>Password <input type=password name=password autocomplete=current-password required></label>
<div class=buttons><button name=decision value=approve>Sign in and continue</button>
<button name=decision value=deny formnovalidate>Deny</button></div>
</form>"""


def _consent(client: OAuthClient, scopes: frozenset[str], values: dict[str, list[str]], csrf: str, ticket: str) -> str:
    return f"""{_asks(client, scopes)}
<form method=post action="/oauth/authorize">
{_hidden(values, csrf)}
<input type=hidden name=ticket value="{_e(ticket)}">
<div class=buttons><button name=decision value=approve>Approve</button>
<button name=decision value=deny>Deny</button></div>
</form>"""


def _page(body: str, redirect_uri: str | None) -> web.Response:
    text = f"""<!doctype html><html lang=en><head><meta charset=utf-8>
<meta name=viewport content="width=device-width, initial-scale=1"><title>Authorize - Tillbox</title>
<style>{_STYLE}</style></head><body>{body}</body></html>"""
    response = web.Response(text=text, content_type="text/html")
    # The CSP of /docs; a form goes to this page, and from it back to the client.
    targets = "'self'"
    if redirect_uri:
        parts = urlsplit(redirect_uri)
        targets += f" {parts.scheme}://{parts.netloc}"
    response.headers["Content-Security-Policy"] = f"{DOCS_CSP}; form-action {targets}"
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def _message_page(status: int, message: str) -> web.Response:
    response = _page(f"<h1>Authorization</h1><p class=message role=alert>{_e(message)}</p>", None)
    response.set_status(status)
    return response

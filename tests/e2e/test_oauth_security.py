"""The OAuth 2 authorization server's security matrix, over real HTTP against a real server:
redirect URIs compared exactly and never redirected to when unknown, PKCE S256 only, codes
single use and bound to their client and redirect URI, refresh tokens single use under a
race, token kinds not interchangeable, the access token's header allow-list, the consent
page's CSRF defences, a disabled client's tokens refused, scopes bounded by the client and
the user's role, and bad input at the token endpoint. Every refusal is checked for its exact
RFC 6749 error (§4.1.2.1 at the authorization endpoint, §5.2 at the token endpoint), its
status, and that nothing was issued (the store is read for codes and sessions).

One server for the module; every test registers the clients it uses (their sessions, codes
and consents are theirs alone), so no state passes from one test to another.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.e2e.test_cli import PASSWORD, create_user, tillbox
from tests.e2e.test_oauth_flow import REDIRECT, Forms, authorize, register, session_for, submit
from tests.harness import Server

OTHER_REDIRECT = "https://app.example.com/other"
TIMEOUT = 10


# The server, its store, and the clients.
@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("oauth-security")
    create_user(where)  # admin@example.com
    create_user(where, "customer@example.com", "customer")
    return where


@pytest.fixture(scope="module")
def server(shop: Path) -> Iterator[Server]:
    with Server(shop) as running:
        yield running


def confidential(shop: Path, scope: str = "orders:read users:read", *more: str) -> dict[str, str]:
    return register(
        shop,
        "--type",
        "confidential",
        "--grant",
        "authorization_code",
        "--grant",
        "refresh_token",
        "--scope",
        scope,
        *more,
    )


def public(shop: Path, scope: str = "orders:read users:read", *more: str) -> dict[str, str]:
    return register(
        shop, "--type", "public", "--grant", "authorization_code", "--grant", "refresh_token", "--scope", scope, *more
    )


def store(shop: Path) -> sqlite3.Connection:
    return sqlite3.connect(shop / "tillbox-data" / "tillbox.db", timeout=10)


def codes_of(shop: Path, client_id: str) -> int:
    with store(shop) as db:
        return int(
            db.execute("SELECT count(*) FROM authorization_codes WHERE client_id = ?", (client_id,)).fetchone()[0]
        )


def sessions_of(shop: Path, client_id: str) -> int:
    with store(shop) as db:
        return int(db.execute("SELECT count(*) FROM refresh_tokens WHERE client_id = ?", (client_id,)).fetchone()[0])


# The protocol's requests, spelled out (no client library smoothing anything over).
def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorization_query(client: dict[str, str], challenge: str, **changes: str | None) -> dict[str, str]:
    query: dict[str, str | None] = {
        "response_type": "code",
        "client_id": client["id"],
        "redirect_uri": REDIRECT,
        "scope": "orders:read",
        "state": "st-" + secrets.token_hex(8),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    query.update(changes)
    return {key: value for key, value in query.items() if value is not None}


def get_page(server: Server, query: dict[str, str], browser: requests.Session | None = None) -> requests.Response:
    return (browser or requests.Session()).get(
        server.base + "/oauth/authorize?" + urlencode(query), allow_redirects=False, timeout=TIMEOUT
    )


def code_for(
    server: Server, client: dict[str, str], email: str = "admin@example.com", scope: str = "orders:read users:read"
) -> tuple[str, str]:
    """A code the user approved (through the page, as a browser), and its verifier."""
    verifier = secrets.token_urlsafe(48)
    location = authorize(server, session_for(client, scope), verifier, email, scope)
    return parse_qs(urlsplit(location).query)["code"][0], verifier


def token_request(
    server: Server, client: dict[str, str] | None, data: dict[str, str], **options: Any
) -> requests.Response:
    """POST /oauth/token, the client authenticated as it must be (Basic with a secret, or
    its client_id in the form for a public client)."""
    if client is not None and client.get("client_secret") and "auth" not in options:
        options["auth"] = (client["id"], client["client_secret"])
    elif client is not None and not client.get("client_secret"):
        data = {"client_id": client["id"], **data}
    return requests.post(server.base + "/oauth/token", data=data, timeout=TIMEOUT, **options)


def exchange(
    server: Server, client: dict[str, str], code: str | None, verifier: str | None, **changes: str | None
) -> requests.Response:
    data: dict[str, str | None] = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
    }
    data.update(changes)
    return token_request(server, client, {key: value for key, value in data.items() if value is not None})


def tokens(server: Server, client: dict[str, str], email: str = "admin@example.com") -> dict[str, Any]:
    code, verifier = code_for(server, client, email)
    answer = exchange(server, client, code, verifier)
    assert answer.status_code == 200, answer.text
    return answer.json()


def me(server: Server, access_token: str) -> int:
    """GET /api/v1/users/me with the token (the clients here are given users:read)."""
    headers = {"Authorization": f"Bearer {access_token}"}
    return requests.get(server.base + "/api/v1/users/me", headers=headers, timeout=TIMEOUT).status_code


def refused(answer: requests.Response, status: int, error: str) -> None:
    """An RFC 6749 §5.2 error: exactly this status and code, no token, not cached."""
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["error"] == error, body
    assert "access_token" not in body and "refresh_token" not in body
    assert answer.headers["Cache-Control"] == "no-store"


def redirected_error(answer: requests.Response, query: dict[str, str], error: str) -> None:
    """An RFC 6749 §4.1.2.1 error: back to the (valid) redirect URI with the error and state."""
    assert answer.status_code == 302, answer.text
    location = answer.headers["Location"]
    assert location.startswith(query["redirect_uri"] + "?"), location
    params = parse_qs(urlsplit(location).query)
    assert params["error"] == [error], params
    assert params["state"] == [query["state"]]
    assert "code" not in params


def within(deadline_seconds: float, condition: Any) -> bool:
    """Whether ``condition()`` becomes true before the deadline (polled, no fixed sleep)."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


# 1. Redirect URIs: compared exactly; a request with an unknown one is shown, never redirected.
BAD_REDIRECTS = {
    "trailing-slash": "https://app.example.com/callback/",
    "upper-case-host": "https://APP.EXAMPLE.COM/callback",
    "upper-case-path": "https://app.example.com/CALLBACK",
    "extra-segment": "https://app.example.com/callback/more",
    "query-added": "https://app.example.com/callback?next=https://evil.example/",
    "fragment": "https://app.example.com/callback#frag",
    "empty-fragment": "https://app.example.com/callback#",
    "userinfo-host-evil": "https://app.example.com@evil.example/callback",
    "userinfo-user": "https://user@app.example.com/callback",
    "other-port": "https://app.example.com:8443/callback",
    "default-port-spelled": "https://app.example.com:443/callback",
    "http-scheme": "http://app.example.com/callback",
    "upper-case-scheme": "HTTPS://app.example.com/callback",
    "suffix-path": "https://app.example.com/callbackx",
    "suffix-host": "https://app.example.com.evil.example/callback",
    "prefix-path": "https://app.example.com/callbac",
    "percent-encoded-path": "https://app.example.com/%63allback",
    "percent-encoded-slash": "https://app.example.com%2fcallback",
    "encoded-dot-segment": "https://app.example.com/x/%2e%2e/callback",
    "dot-segment": "https://app.example.com/x/../callback",
    "trailing-dot-host": "https://app.example.com./callback",
    "whitespace": " https://app.example.com/callback",
    "javascript": "javascript:alert(1)//https://app.example.com/callback",
    "empty": "",
}


#: Characters RFC 6749 does not allow in error_description (authlib raises ValueError on them).
UNSAYABLE_REDIRECTS = {
    "backslash": "https://app.example.com\\@evil.example/callback",
    "nul": "https://app.example.com/callback\x00",
    "double-quote": 'https://app.example.com/"callback',
    "non-ascii": "https://app.example.com/callb\u00e4ck",
}


@pytest.fixture(scope="module")
def redirect_client(shop: Path) -> dict[str, str]:
    """One client for the redirect matrix: its requests are refused before anything is written."""
    return confidential(shop)


class Attributes(HTMLParser):
    """Every attribute value of a page (where a link, a form's action or a refresh would be)."""

    def __init__(self, page: str):
        super().__init__()
        self.values: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.values += [value for _, value in attrs if value]


def shown_not_redirected(answer: requests.Response, bad: str | None) -> None:
    assert answer.status_code == 400, answer.text
    assert "Location" not in answer.headers and "Refresh" not in answer.headers
    assert answer.headers["Content-Type"].startswith("text/html")
    assert "cannot be served" in answer.text
    assert "<form" not in answer.text and "<a " not in answer.text and "<meta http-equiv" not in answer.text.lower()
    csp = answer.headers.get("Content-Security-Policy", "")
    if bad:
        # It may be named in the message (escaped), never linked, submitted to or allowed.
        attributes = Attributes(answer.text).values
        assert not [value for value in attributes if bad in value or "evil.example" in value]
        assert "evil.example" not in csp and f"//{urlsplit(bad).netloc}" not in csp.replace("'self'", "")
        if any(mark in bad for mark in "<>\"'"):
            assert bad not in answer.text
    assert "set-cookie" not in {name.lower() for name in answer.headers}  # no form, no CSRF cookie


@pytest.mark.parametrize("bad", list(BAD_REDIRECTS.values()), ids=list(BAD_REDIRECTS))
def test_a_redirect_uri_not_registered_exactly_is_shown_never_redirected_to(
    server: Server, shop: Path, redirect_client: dict[str, str], bad: str
) -> None:
    _, challenge = pkce()
    answer = get_page(server, authorization_query(redirect_client, challenge, redirect_uri=bad))
    shown_not_redirected(answer, bad)
    assert codes_of(shop, redirect_client["id"]) == 0


@pytest.mark.parametrize("bad", list(UNSAYABLE_REDIRECTS.values()), ids=list(UNSAYABLE_REDIRECTS))
def test_a_redirect_uri_authlib_cannot_quote_is_shown_not_a_500(
    server: Server, shop: Path, redirect_client: dict[str, str], bad: str
) -> None:
    _, challenge = pkce()
    answer = get_page(server, authorization_query(redirect_client, challenge, redirect_uri=bad))
    shown_not_redirected(answer, bad)


@pytest.mark.parametrize("response_type", ['co"de', "c\u00f6de", "code\\"], ids=["quote", "non-ascii", "backslash"])
def test_an_unquotable_response_type_is_sent_back_unsupported_response_type(
    server: Server, redirect_client: dict[str, str], response_type: str
) -> None:
    _, challenge = pkce()
    query = authorization_query(redirect_client, challenge, response_type=response_type)
    redirected_error(get_page(server, query), query, "unsupported_response_type")


@pytest.mark.parametrize("response_type", ["token", "code token", "id_token", ""])
def test_another_response_type_is_sent_back_unsupported_response_type(
    server: Server, shop: Path, redirect_client: dict[str, str], response_type: str
) -> None:
    _, challenge = pkce()
    query = authorization_query(redirect_client, challenge, response_type=response_type)
    answer = get_page(server, query)
    redirected_error(answer, query, "unsupported_response_type")
    assert "access_token" not in answer.headers["Location"]


def test_the_registered_redirect_uri_itself_is_served(server: Server, redirect_client: dict[str, str]) -> None:
    """The control for the matrix above: the exact string gives the page."""
    _, challenge = pkce()
    answer = get_page(server, authorization_query(redirect_client, challenge))
    assert answer.status_code == 200 and "Location" not in answer.headers


def test_a_missing_redirect_uri_is_shown_not_redirected(server: Server, redirect_client: dict[str, str]) -> None:
    _, challenge = pkce()
    answer = get_page(server, authorization_query(redirect_client, challenge, redirect_uri=None))
    shown_not_redirected(answer, None)


def test_a_repeated_redirect_uri_is_shown_not_redirected(server: Server, redirect_client: dict[str, str]) -> None:
    _, challenge = pkce()
    query = urlencode(authorization_query(redirect_client, challenge)) + "&" + urlencode({"redirect_uri": REDIRECT})
    answer = requests.get(server.base + "/oauth/authorize?" + query, allow_redirects=False, timeout=TIMEOUT)
    assert answer.status_code in (200, 400) and "Location" not in answer.headers


@pytest.mark.parametrize("client_id", ["cli_00000000000000000000000000", "", "x" * 300])
def test_an_unknown_client_is_shown_not_redirected(server: Server, client_id: str) -> None:
    _, challenge = pkce()
    answer = get_page(server, authorization_query({"id": client_id}, challenge))
    shown_not_redirected(answer, None)


def test_a_missing_client_id_is_shown_not_redirected(server: Server) -> None:
    _, challenge = pkce()
    answer = get_page(server, authorization_query({"id": ""}, challenge, client_id=None))
    shown_not_redirected(answer, None)


def test_a_disabled_client_is_shown_not_redirected(server: Server, shop: Path) -> None:
    client = confidential(shop)
    disabled = tillbox("clients", "disable", client["id"], cwd=shop)
    assert disabled.returncode == 0, disabled.stderr
    _, challenge = pkce()
    answer = get_page(server, authorization_query(client, challenge))
    shown_not_redirected(answer, None)
    assert codes_of(shop, client["id"]) == 0


# 2. PKCE: S256 only, for every client.
@pytest.mark.parametrize(
    "changes",
    [
        {"code_challenge_method": "plain"},
        {"code_challenge_method": None},
        {"code_challenge_method": "s256"},
        {"code_challenge_method": ""},
        {"code_challenge": None},
        {"code_challenge": ""},
        {"code_challenge": None, "code_challenge_method": None},
    ],
    ids=[
        "plain",
        "method-missing",
        "method-lower-case",
        "method-empty",
        "challenge-missing",
        "challenge-empty",
        "none",
    ],
)
@pytest.mark.parametrize("kind", ["confidential", "public"])
def test_an_authorization_request_without_an_s256_challenge_is_sent_back_invalid_request(
    server: Server, shop: Path, kind: str, changes: dict[str, str | None]
) -> None:
    client = confidential(shop) if kind == "confidential" else public(shop)
    _, challenge = pkce()
    query = authorization_query(client, challenge, **changes)
    redirected_error(get_page(server, query), query, "invalid_request")
    assert codes_of(shop, client["id"]) == 0


@pytest.mark.parametrize("length", [42, 129])
def test_a_challenge_of_the_wrong_length_is_refused(server: Server, shop: Path, length: int) -> None:
    """RFC 7636 §4.2: 43 to 128 characters (the store's CHECK would otherwise refuse it, as a 500)."""
    client = confidential(shop)
    query = authorization_query(client, "A" * length)
    answer = get_page(server, query)
    if answer.status_code == 200:  # accepted at the page: it must not fail later, when the code is made
        browser = requests.Session()
        page = get_page(server, query, browser)
        answer = submit(browser, server.base, page.text, "approve", email="admin@example.com", password=PASSWORD)
        if answer.status_code == 200:
            answer = submit(browser, server.base, answer.text, "approve")
    redirected_error(answer, query, "invalid_request")
    assert codes_of(shop, client["id"]) == 0


@pytest.mark.parametrize("kind", ["confidential", "public"])
def test_a_code_exchanged_without_its_verifier_is_refused(server: Server, shop: Path, kind: str) -> None:
    client = confidential(shop) if kind == "confidential" else public(shop)
    code, verifier = code_for(server, client)
    refused(exchange(server, client, code, None), 400, "invalid_request")
    refused(exchange(server, client, code, ""), 400, "invalid_request")
    assert sessions_of(shop, client["id"]) == 0
    assert exchange(server, client, code, verifier).status_code == 200  # nothing was spent


@pytest.mark.parametrize("kind", ["confidential", "public"])
def test_a_code_exchanged_with_a_wrong_verifier_is_refused(server: Server, shop: Path, kind: str) -> None:
    client = confidential(shop) if kind == "confidential" else public(shop)
    code, verifier = code_for(server, client)
    _, challenge = pkce()
    for wrong in (secrets.token_urlsafe(48), challenge, verifier + "x", verifier[:-1]):
        refused(exchange(server, client, code, wrong), 400, "invalid_grant")
    assert sessions_of(shop, client["id"]) == 0


# 3. Codes.
def test_a_code_used_twice_is_refused_and_the_first_exchanges_tokens_are_revoked(server: Server, shop: Path) -> None:
    client = confidential(shop)
    code, verifier = code_for(server, client)
    first = exchange(server, client, code, verifier)
    assert first.status_code == 200
    issued = first.json()
    assert me(server, issued["access_token"]) == 200
    refused(exchange(server, client, code, verifier), 400, "invalid_grant")
    assert within(1.0, lambda: me(server, issued["access_token"]) == 401)
    refresh = {"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]}
    refused(token_request(server, client, refresh), 400, "invalid_grant")
    assert sessions_of(shop, client["id"]) == 1  # the first exchange's session, ended


def test_a_code_of_client_a_exchanged_by_client_b_is_refused(server: Server, shop: Path) -> None:
    a, b = confidential(shop), confidential(shop)
    code, verifier = code_for(server, a)
    refused(exchange(server, b, code, verifier), 400, "invalid_grant")
    # Even with A's id in the form: B authenticated as itself, and the code is not B's.
    refused(exchange(server, b, code, verifier, client_id=a["id"]), 400, "invalid_grant")
    public_b = public(shop)
    refused(exchange(server, public_b, code, verifier), 400, "invalid_grant")
    assert sessions_of(shop, b["id"]) == 0 and sessions_of(shop, public_b["id"]) == 0
    assert sessions_of(shop, a["id"]) == 0


def test_a_public_client_cannot_exchange_a_confidential_clients_code_by_naming_it(server: Server, shop: Path) -> None:
    """The confidential client's id in the form, no secret: invalid_client, nothing issued."""
    a = confidential(shop)
    code, verifier = code_for(server, a)
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier}
    answer = token_request(server, None, {"client_id": a["id"], **data})
    refused(answer, 401, "invalid_client")
    assert sessions_of(shop, a["id"]) == 0


@pytest.mark.parametrize(
    "redirect_uri",
    [OTHER_REDIRECT, REDIRECT + "/", "https://evil.example/callback", None],
    ids=["another-registered", "trailing-slash", "unregistered", "missing"],
)
def test_a_code_with_another_redirect_uri_at_the_token_endpoint_is_refused(
    server: Server, shop: Path, redirect_uri: str | None
) -> None:
    client = confidential(shop, "orders:read users:read", "--redirect-uri", OTHER_REDIRECT)
    code, verifier = code_for(server, client)
    refused(exchange(server, client, code, verifier, redirect_uri=redirect_uri), 400, "invalid_grant")
    assert sessions_of(shop, client["id"]) == 0


def test_an_expired_code_is_refused(server: Server, shop: Path) -> None:
    """The server's clock cannot be moved: the code's times are moved back in its store instead
    (both, keeping the table's CHECK expires_at > created_at)."""
    client = confidential(shop)
    code, verifier = code_for(server, client)
    with store(shop) as db:
        moved = db.execute(
            "UPDATE authorization_codes SET created_at = '2000' || substr(created_at, 5),"
            " expires_at = '2000' || substr(expires_at, 5) WHERE client_id = ?",
            (client["id"],),
        ).rowcount
    assert moved == 1
    refused(exchange(server, client, code, verifier), 400, "invalid_grant")
    assert sessions_of(shop, client["id"]) == 0


def test_an_unknown_code_is_refused(server: Server, shop: Path) -> None:
    client = confidential(shop)
    refused(exchange(server, client, secrets.token_urlsafe(32), secrets.token_urlsafe(48)), 400, "invalid_grant")
    refused(exchange(server, client, "", secrets.token_urlsafe(48)), 400, "invalid_grant")
    refused(exchange(server, client, None, secrets.token_urlsafe(48)), 400, "invalid_request")


# 4. A refresh token raced: one wins, and the replay ends the family.
def test_fifty_parallel_uses_of_one_refresh_token_give_exactly_one_success(server: Server, shop: Path) -> None:
    client = confidential(shop)
    issued = tokens(server, client)
    data = {"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]}
    start = threading.Barrier(50)
    answers: list[requests.Response] = []
    lock = threading.Lock()

    def use() -> None:
        with requests.Session() as http:
            start.wait()
            answer = http.post(
                server.base + "/oauth/token",
                data=data,
                auth=(client["id"], client["client_secret"]),
                timeout=60,
            )
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=use) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert len(answers) == 50
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200] + [400] * 49, statuses
    (winner,) = [answer.json() for answer in answers if answer.status_code == 200]
    for answer in answers:
        if answer.status_code != 200:
            refused(answer, 400, "invalid_grant")
    # A replay happened: the whole family is ended, the winner's new tokens too.
    again = {"grant_type": "refresh_token", "refresh_token": winner["refresh_token"]}
    refused(token_request(server, client, again), 400, "invalid_grant")
    assert within(1.0, lambda: me(server, winner["access_token"]) == 401)
    assert me(server, issued["access_token"]) == 401


def test_twenty_parallel_exchanges_of_one_code_give_one_session_and_end_it(server: Server, shop: Path) -> None:
    client = confidential(shop)
    code, verifier = code_for(server, client)
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier}
    start = threading.Barrier(20)
    answers: list[requests.Response] = []
    lock = threading.Lock()

    def use() -> None:
        with requests.Session() as http:
            start.wait()
            answer = http.post(
                server.base + "/oauth/token", data=data, auth=(client["id"], client["client_secret"]), timeout=60
            )
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=use) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert sorted(answer.status_code for answer in answers) == [200] + [400] * 19
    for answer in answers:
        if answer.status_code != 200:
            refused(answer, 400, "invalid_grant")
    (winner,) = [answer.json() for answer in answers if answer.status_code == 200]
    assert sessions_of(shop, client["id"]) == 1
    # The replays end the session the winner began.
    assert within(1.0, lambda: me(server, winner["access_token"]) == 401)
    again = {"grant_type": "refresh_token", "refresh_token": winner["refresh_token"]}
    refused(token_request(server, client, again), 400, "invalid_grant")


# 5. Token kinds are not interchangeable, nor are clients.
def test_a_refresh_token_is_not_an_access_token(server: Server, shop: Path) -> None:
    client = confidential(shop)
    issued = tokens(server, client)
    assert me(server, issued["refresh_token"]) == 401
    assert me(server, issued["access_token"]) == 200


def test_an_access_token_is_not_a_refresh_token(server: Server, shop: Path) -> None:
    client = confidential(shop)
    issued = tokens(server, client)
    data = {"grant_type": "refresh_token", "refresh_token": issued["access_token"]}
    refused(token_request(server, client, data), 400, "invalid_grant")
    assert sessions_of(shop, client["id"]) == 1
    assert me(server, issued["access_token"]) == 200


def test_a_refresh_token_of_client_a_is_refused_to_client_b(server: Server, shop: Path) -> None:
    a, b = confidential(shop), confidential(shop)
    issued = tokens(server, a)
    data = {"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]}
    refused(token_request(server, b, data), 400, "invalid_grant")
    assert sessions_of(shop, b["id"]) == 0
    # A's session goes on: B's attempt was not A's replay.
    assert token_request(server, a, data).status_code == 200


def introspect(server: Server, client: dict[str, str], token: str) -> requests.Response:
    auth = (client["id"], client["client_secret"]) if client.get("client_secret") else None
    data = {"token": token} if auth else {"token": token, "client_id": client["id"]}
    return requests.post(server.base + "/oauth/introspect", data=data, auth=auth, timeout=TIMEOUT)


def test_introspection_by_another_client_says_inactive(server: Server, shop: Path) -> None:
    a, b = confidential(shop), confidential(shop)
    issued = tokens(server, a)
    for token in (issued["access_token"], issued["refresh_token"]):
        mine = introspect(server, a, token)
        assert mine.status_code == 200 and mine.json()["active"] is True
        theirs = introspect(server, b, token)
        assert theirs.status_code == 200
        assert theirs.json() == {"active": False}


def test_a_public_client_may_not_introspect(server: Server, shop: Path) -> None:
    client = public(shop)
    issued = tokens(server, client)
    answer = introspect(server, client, issued["access_token"])
    assert answer.status_code == 401 and answer.json()["error"] == "invalid_client"
    assert "active" not in answer.json()


def test_a_token_revoked_by_client_b_that_belongs_to_client_a_stays_valid(server: Server, shop: Path) -> None:
    a, b = confidential(shop), confidential(shop)
    issued = tokens(server, a)
    for token in (issued["access_token"], issued["refresh_token"]):
        answer = requests.post(
            server.base + "/oauth/revoke", data={"token": token}, auth=(b["id"], b["client_secret"]), timeout=TIMEOUT
        )
        assert answer.status_code == 200  # RFC 7009 §2.2: the same answer, nothing revoked
    assert me(server, issued["access_token"]) == 200
    assert introspect(server, a, issued["refresh_token"]).json()["active"] is True
    data = {"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]}
    assert token_request(server, a, data).status_code == 200


# 6. The access token's header: EdDSA, our kid, typ at+jwt, nothing else.
def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signing_key(shop: Path) -> tuple[dict[str, Any], Ed25519PrivateKey]:
    (path,) = (shop / "tillbox-data" / "keys").glob("*.json")
    jwk = json.loads(path.read_text())["jwk"]
    return jwk, Ed25519PrivateKey.from_private_bytes(unb64(jwk["d"]))


def forge(header: dict[str, Any], claims: dict[str, Any], sign: Any = None, *, raw_header: bytes | None = None) -> str:
    head = b64(raw_header if raw_header is not None else json.dumps(header).encode())
    body = b64(json.dumps(claims).encode())
    signature = sign(f"{head}.{body}".encode()) if sign is not None else b""
    return f"{head}.{body}.{b64(signature)}"


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    head, body, _ = token.split(".")
    return json.loads(unb64(head)), json.loads(unb64(body))


def hs256(secret: bytes) -> Any:
    return lambda data: hmac.new(secret, data, hashlib.sha256).digest()


def forgeries(shop: Path, token: str) -> dict[str, str]:
    header, claims = parts(token)
    jwk, key = signing_key(shop)
    real = key.sign
    other = Ed25519PrivateKey.generate().sign
    public_jwk = {name: jwk[name] for name in ("kty", "crv", "x")}
    pem_like = json.dumps(public_jwk).encode()
    return {
        "alg-none": forge({**header, "alg": "none"}, claims),
        "alg-none-signed": forge({**header, "alg": "none"}, claims, real),
        "alg-None": forge({**header, "alg": "None"}, claims),
        "no-alg": forge({"kid": header["kid"], "typ": header["typ"]}, claims, real),
        "hs256-raw-public-key": forge({**header, "alg": "HS256"}, claims, hs256(unb64(jwk["x"]))),
        "hs256-b64-public-key": forge({**header, "alg": "HS256"}, claims, hs256(jwk["x"].encode())),
        "hs256-public-jwk": forge({**header, "alg": "HS256"}, claims, hs256(pem_like)),
        "rs256-header": forge({**header, "alg": "RS256"}, claims, real),
        "es256-header": forge({**header, "alg": "ES256"}, claims, real),
        "ed25519-alg": forge({**header, "alg": "Ed25519"}, claims, real),
        "wrong-kid": forge({**header, "kid": "not-a-key"}, claims, real),
        "no-kid": forge({"alg": header["alg"], "typ": header["typ"]}, claims, real),
        "kid-path": forge({**header, "kid": "../keys/" + header["kid"]}, claims, real),
        "missing-typ": forge({"alg": header["alg"], "kid": header["kid"]}, claims, real),
        "typ-jwt": forge({**header, "typ": "JWT"}, claims, real),
        "typ-upper": forge({**header, "typ": "AT+JWT"}, claims, real),
        "typ-full-media-type": forge({**header, "typ": "application/at+jwt"}, claims, real),
        "extra-jwk-header": forge({**header, "jwk": public_jwk}, claims, real),
        "extra-crit-header": forge({**header, "crit": ["exp"]}, claims, real),
        # RFC 7515 §4: duplicates refused, or the last one read; a first-wins parser would take EdDSA.
        "duplicate-alg-last-none": forge(
            {},
            claims,
            raw_header=(
                f'{{"alg":"{header["alg"]}","kid":"{header["kid"]}","typ":"{header["typ"]}","alg":"none"}}'
            ).encode(),
        ),
        "another-key-same-kid": forge(header, claims, other),
        "scope-widened": forge(header, {**claims, "scope": claims["scope"] + " catalog:write"}, other),
        "no-signature": forge(header, claims),
        "expired-real-key": forge(header, {**claims, "exp": int(time.time()) - 3600}, real),
    }


FORGERIES = [
    "alg-none",
    "alg-none-signed",
    "alg-None",
    "no-alg",
    "hs256-raw-public-key",
    "hs256-b64-public-key",
    "hs256-public-jwk",
    "rs256-header",
    "es256-header",
    "ed25519-alg",
    "wrong-kid",
    "no-kid",
    "kid-path",
    "missing-typ",
    "typ-jwt",
    "typ-upper",
    "typ-full-media-type",
    "extra-jwk-header",
    "extra-crit-header",
    "duplicate-alg-last-none",
    "another-key-same-kid",
    "scope-widened",
    "no-signature",
    "expired-real-key",
]


@pytest.fixture(scope="module")
def real_access_token(server: Server, shop: Path) -> str:
    return str(tokens(server, confidential(shop))["access_token"])


def test_the_forging_harness_makes_a_token_the_api_accepts(server: Server, shop: Path, real_access_token: str) -> None:
    """The control: the real header and claims re-signed with the real key pass, so each
    refusal below is the header's or the signature's, not the harness's."""
    header, claims = parts(real_access_token)
    _, key = signing_key(shop)
    assert me(server, forge(header, claims, key.sign)) == 200


@pytest.mark.parametrize("name", FORGERIES)
def test_a_forged_or_re_signed_access_token_is_refused(
    server: Server, shop: Path, real_access_token: str, name: str
) -> None:
    forged = forgeries(shop, real_access_token)[name]
    answer = requests.get(
        server.base + "/api/v1/users/me", headers={"Authorization": f"Bearer {forged}"}, timeout=TIMEOUT
    )
    assert answer.status_code == 401, answer.text
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")


# 7. The consent page's CSRF defences.
def first_form(page: str) -> list[tuple[str, str]]:
    (form,) = Forms(page).forms
    return [(str(name), str(value)) for name, value in form["fields"] if name]  # type: ignore[attr-defined]


def post_form(
    server: Server, fields: list[tuple[str, str]], cookies: dict[str, str] | None, **typed: str
) -> requests.Response:
    data = [(name, typed.get(name, value)) for name, value in fields] + [("decision", "approve")]
    return requests.post(
        server.base + "/oauth/authorize", data=data, cookies=cookies or {}, allow_redirects=False, timeout=TIMEOUT
    )


def csrf_refused(answer: requests.Response) -> None:
    assert answer.status_code == 403, answer.text
    assert "Location" not in answer.headers
    assert answer.headers["Content-Type"].startswith("text/html")


def signed_in_fields(server: Server, client: dict[str, str]) -> tuple[str, list[tuple[str, str]], str]:
    browser = requests.Session()
    _, challenge = pkce()
    page = get_page(server, authorization_query(client, challenge), browser)
    assert page.status_code == 200
    return page.text, first_form(page.text), str(browser.cookies["tillbox_oauth_csrf"])


def test_consent_without_the_csrf_cookie_is_refused(server: Server, shop: Path) -> None:
    client = confidential(shop)
    _, fields, _ = signed_in_fields(server, client)
    csrf_refused(post_form(server, fields, None, email="admin@example.com", password=PASSWORD))
    assert codes_of(shop, client["id"]) == 0


@pytest.mark.parametrize("cookie", ["different", "", "x" * 43], ids=["different", "empty", "same-length"])
def test_consent_with_a_cookie_not_matching_the_form_is_refused(server: Server, shop: Path, cookie: str) -> None:
    client = confidential(shop)
    _, fields, _ = signed_in_fields(server, client)
    answer = post_form(server, fields, {"tillbox_oauth_csrf": cookie}, email="admin@example.com", password=PASSWORD)
    csrf_refused(answer)
    assert codes_of(shop, client["id"]) == 0


def test_consent_without_the_forms_csrf_field_is_refused(server: Server, shop: Path) -> None:
    client = confidential(shop)
    _, fields, cookie = signed_in_fields(server, client)
    without = [(name, value) for name, value in fields if name != "csrf"]
    answer = post_form(server, without, {"tillbox_oauth_csrf": cookie}, email="admin@example.com", password=PASSWORD)
    csrf_refused(answer)
    assert codes_of(shop, client["id"]) == 0


def test_a_form_from_another_sessions_page_is_refused(server: Server, shop: Path) -> None:
    client = confidential(shop)
    _, attackers_fields, _ = signed_in_fields(server, client)
    _, _, victims_cookie = signed_in_fields(server, client)
    answer = post_form(
        server, attackers_fields, {"tillbox_oauth_csrf": victims_cookie}, email="admin@example.com", password=PASSWORD
    )
    csrf_refused(answer)
    assert codes_of(shop, client["id"]) == 0


def consent_step(server: Server, client: dict[str, str], email: str, scope: str) -> tuple[list[tuple[str, str]], str]:
    """Signed in on the page, at the consent step: its fields (with the ticket) and the cookie."""
    browser = requests.Session()
    _, challenge = pkce()
    page = get_page(server, authorization_query(client, challenge, scope=scope), browser)
    answer = submit(browser, server.base, page.text, "approve", email=email, password=PASSWORD)
    assert answer.status_code == 200 and "Approve" in answer.text, answer.text
    return first_form(answer.text), str(browser.cookies["tillbox_oauth_csrf"])


def test_a_forged_consent_ticket_is_refused(server: Server, shop: Path) -> None:
    client = confidential(shop, "orders:read catalog:read")
    fields, cookie = consent_step(server, client, "customer@example.com", "orders:read")
    ticket = dict(fields)["ticket"]
    user_id, expires, scope, mac = ticket.split(".")
    assert scope == "orders:read"  # the scopes the page showed are part of what is signed
    with store(shop) as db:
        (admin_id,) = db.execute("SELECT id FROM users WHERE email = 'admin@example.com'").fetchone()
    forged = {
        "another-user": f"{admin_id}.{expires}.{scope}.{mac}",
        "later-expiry": f"{user_id}.{int(expires) + 3600}.{scope}.{mac}",
        "past-expiry": f"{user_id}.{int(time.time()) - 1}.{scope}.{mac}",
        "wider-scope": f"{user_id}.{expires}.orders:read+catalog:read.{mac}",
        "mac-changed": f"{user_id}.{expires}.{scope}.{mac[:-2]}{'AA' if mac[-2:] != 'AA' else 'BB'}",
        "no-mac": f"{user_id}.{expires}.{scope}.",
        "old-form": f"{user_id}.{expires}.{mac}",
        "garbage": "garbage",
    }
    jar = {"tillbox_oauth_csrf": cookie}
    for name, value in forged.items():
        changed = [(key, value if key == "ticket" else item) for key, item in fields]
        answer = post_form(server, changed, jar)
        assert answer.status_code == 403, name
        assert "Location" not in answer.headers, name
    # The ticket of one request does not approve another (wider scope, other redirect, other challenge).
    _, challenge = pkce()
    for key, value in (("scope", "orders:read catalog:read"), ("code_challenge", challenge), ("state", "other")):
        changed = [(name, value if name == key else item) for name, item in fields]
        answer = post_form(server, changed, jar)
        assert answer.status_code == 403, key
        assert "Location" not in answer.headers, key
    assert codes_of(shop, client["id"]) == 0
    # The control: the ticket as given approves.
    answer = post_form(server, fields, jar)
    assert answer.status_code == 302 and "code=" in answer.headers["Location"]
    assert codes_of(shop, client["id"]) == 1


# 8. A disabled client's tokens are refused at once.
def test_a_disabled_clients_tokens_are_refused_at_once(server: Server, shop: Path) -> None:
    client = confidential(shop)
    issued = tokens(server, client)
    assert me(server, issued["access_token"]) == 200
    disabled = tillbox("clients", "disable", client["id"], cwd=shop)
    assert disabled.returncode == 0, disabled.stderr
    assert within(1.0, lambda: me(server, issued["access_token"]) == 401)
    data = {"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]}
    answer = token_request(server, client, data)
    assert (answer.status_code, answer.json()["error"]) in ((401, "invalid_client"), (400, "invalid_grant"))
    assert "access_token" not in answer.json()
    assert introspect(server, client, issued["access_token"]).status_code == 401  # it cannot authenticate


# 9. Scopes.
def test_a_scope_the_client_was_not_registered_for_is_sent_back_invalid_scope(server: Server, shop: Path) -> None:
    client = confidential(shop, "orders:read")
    _, challenge = pkce()
    for scope in ("catalog:read", "orders:read catalog:read"):
        query = authorization_query(client, challenge, scope=scope)
        redirected_error(get_page(server, query), query, "invalid_scope")
    assert codes_of(shop, client["id"]) == 0


@pytest.mark.parametrize("scope", ["orders:nuke", "ORDERS:READ", "orders:read openid", "*"])
def test_an_unknown_scope_is_sent_back_invalid_scope(server: Server, shop: Path, scope: str) -> None:
    client = confidential(shop, "orders:read")
    _, challenge = pkce()
    query = authorization_query(client, challenge, scope=scope)
    redirected_error(get_page(server, query), query, "invalid_scope")
    assert codes_of(shop, client["id"]) == 0


def test_a_missing_scope_is_sent_back_invalid_scope(server: Server, shop: Path) -> None:
    client = confidential(shop, "orders:read")
    _, challenge = pkce()
    query = authorization_query(client, challenge, scope=None)
    redirected_error(get_page(server, query), query, "invalid_scope")


def customer_grant(server: Server, shop: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """A client that has catalog:write, approved by a customer asking for it and orders:read."""
    client = confidential(shop, "orders:read catalog:write")
    verifier = secrets.token_urlsafe(48)
    scope = "orders:read catalog:write"
    location = authorize(server, session_for(client, scope), verifier, "customer@example.com", scope)
    code = parse_qs(urlsplit(location).query)["code"][0]
    answer = exchange(server, client, code, verifier)
    assert answer.status_code == 200, answer.text
    return client, answer.json()


def test_a_customers_token_never_carries_catalog_write(server: Server, shop: Path) -> None:
    """The client may have catalog:write; the customer's role may not: the token leaves it out
    (it is not sent back access_denied: orders:read is granted)."""
    client, issued = customer_grant(server, shop)
    assert issued["scope"] == "orders:read"
    _, claims = parts(issued["access_token"])
    assert claims["scope"] == "orders:read"
    answer = requests.post(
        server.base + "/api/v1/products",
        json={"sku": "X-9", "name": "X", "price": 100},
        headers={"Authorization": f"Bearer {issued['access_token']}"},
        timeout=TIMEOUT,
    )
    assert answer.status_code == 403
    # Asking for it at refresh does not add it either.
    data = {
        "grant_type": "refresh_token",
        "refresh_token": issued["refresh_token"],
        "scope": "orders:read catalog:write",
    }
    renewed = token_request(server, client, data)
    assert renewed.status_code in (200, 400), renewed.text
    if renewed.status_code == 200:
        assert renewed.json()["scope"] == "orders:read"
        assert parts(renewed.json()["access_token"])[1]["scope"] == "orders:read"
    else:
        refused(renewed, 400, "invalid_scope")


def test_what_a_customer_granted_is_stored_without_catalog_write(server: Server, shop: Path) -> None:
    """What the store keeps of the grant is what the page showed and the user approved: a later
    change of role (or a bug in the clipping at issue) must not widen the client's access."""
    client, _ = customer_grant(server, shop)
    with store(shop) as db:
        code_scope = db.execute("SELECT scope FROM authorization_codes WHERE client_id = ?", (client["id"],)).fetchone()
        consent = db.execute("SELECT scope FROM oauth_consents WHERE client_id = ?", (client["id"],)).fetchone()
        session = db.execute("SELECT scope FROM refresh_tokens WHERE client_id = ?", (client["id"],)).fetchone()
    stored = {"code": code_scope[0], "consent": consent[0], "session": session[0]}
    assert stored == {"code": "orders:read", "consent": "orders:read", "session": "orders:read"}


def test_a_customer_asked_only_for_catalog_write_is_sent_back_access_denied(server: Server, shop: Path) -> None:
    client = confidential(shop, "catalog:write")
    browser = requests.Session()
    _, challenge = pkce()
    query = authorization_query(client, challenge, scope="catalog:write")
    page = get_page(server, query, browser)
    assert page.status_code == 200
    answer = submit(browser, server.base, page.text, "approve", email="customer@example.com", password=PASSWORD)
    redirected_error(answer, query, "access_denied")
    assert codes_of(shop, client["id"]) == 0


def test_denying_sends_back_access_denied(server: Server, shop: Path) -> None:
    client = confidential(shop)
    browser = requests.Session()
    _, challenge = pkce()
    query = authorization_query(client, challenge)
    page = get_page(server, query, browser)
    answer = submit(browser, server.base, page.text, "deny")
    redirected_error(answer, query, "access_denied")
    assert codes_of(shop, client["id"]) == 0


# 10. Bad input at the token endpoint.
def test_a_json_body_is_invalid_request(server: Server, shop: Path) -> None:
    client = confidential(shop)
    code, verifier = code_for(server, client)
    body = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier}
    answer = requests.post(
        server.base + "/oauth/token", json=body, auth=(client["id"], client["client_secret"]), timeout=TIMEOUT
    )
    refused(answer, 400, "invalid_request")
    assert sessions_of(shop, client["id"]) == 0
    assert exchange(server, client, code, verifier).status_code == 200  # the code was not spent


@pytest.mark.parametrize("grant_type", ["password", "implicit", "urn:ietf:params:oauth:grant-type:jwt-bearer", "CODE"])
def test_an_unknown_grant_type_is_unsupported(server: Server, shop: Path, grant_type: str) -> None:
    client = confidential(shop)
    data = {"grant_type": grant_type, "username": "admin@example.com", "password": PASSWORD}
    refused(token_request(server, client, data), 400, "unsupported_grant_type")
    assert sessions_of(shop, client["id"]) == 0


def test_a_missing_grant_type_is_invalid_request(server: Server, shop: Path) -> None:
    client = confidential(shop)
    code, verifier = code_for(server, client)
    answer = token_request(server, client, {"code": code, "redirect_uri": REDIRECT, "code_verifier": verifier})
    assert sessions_of(shop, client["id"]) == 0
    refused(answer, 400, "invalid_request")


def test_a_missing_grant_type_issues_nothing(server: Server, shop: Path) -> None:
    client = confidential(shop)
    code, verifier = code_for(server, client)
    answer = token_request(server, client, {"code": code, "redirect_uri": REDIRECT, "code_verifier": verifier})
    assert answer.status_code == 400 and answer.json()["error"] in ("invalid_request", "unsupported_grant_type")
    assert "access_token" not in answer.json()
    assert sessions_of(shop, client["id"]) == 0


def test_client_credentials_for_a_client_not_registered_for_it_is_unauthorized_client(
    server: Server, shop: Path
) -> None:
    client = confidential(shop)
    refused(token_request(server, client, {"grant_type": "client_credentials"}), 400, "unauthorized_client")
    assert sessions_of(shop, client["id"]) == 0


def test_client_credentials_for_a_public_client_is_invalid_client(server: Server, shop: Path) -> None:
    client = public(shop)
    answer = token_request(server, client, {"grant_type": "client_credentials", "scope": "orders:read"})
    refused(answer, 401, "invalid_client")
    assert sessions_of(shop, client["id"]) == 0


def test_client_credentials_beyond_the_clients_scopes_is_invalid_scope(server: Server, shop: Path) -> None:
    """(client_credentials was built while this matrix was written: its refusals are checked.)"""
    client = register(shop, "--type", "confidential", "--grant", "client_credentials", "--scope", "orders:read")
    for scope in ("catalog:write", "orders:read users:read", "orders:nuke"):
        refused(
            token_request(server, client, {"grant_type": "client_credentials", "scope": scope}), 400, "invalid_scope"
        )
    issued = token_request(server, client, {"grant_type": "client_credentials", "scope": "orders:read"})
    assert issued.status_code == 200 and "refresh_token" not in issued.json()
    assert issued.json()["scope"] == "orders:read"


def assert_invalid_client(answer: requests.Response, *, basic: bool) -> None:
    refused(answer, 401, "invalid_client")
    if basic:
        assert answer.headers["WWW-Authenticate"].lower().startswith("basic")


def test_a_wrong_client_secret_is_invalid_client(server: Server, shop: Path) -> None:
    client = confidential(shop)
    code, verifier = code_for(server, client)
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier}
    wrong = client["client_secret"][:-1] + ("A" if client["client_secret"][-1] != "A" else "B")
    for secret in (wrong, "", client["client_secret"] + "x"):
        answer = requests.post(server.base + "/oauth/token", data=data, auth=(client["id"], secret), timeout=TIMEOUT)
        assert_invalid_client(answer, basic=True)
    # The same in the form (client_secret_post).
    posted = requests.post(
        server.base + "/oauth/token",
        data={**data, "client_id": client["id"], "client_secret": wrong},
        timeout=TIMEOUT,
    )
    assert_invalid_client(posted, basic=False)
    # No secret at all from a confidential client.
    assert_invalid_client(
        requests.post(server.base + "/oauth/token", data={**data, "client_id": client["id"]}, timeout=TIMEOUT),
        basic=False,
    )
    assert sessions_of(shop, client["id"]) == 0
    assert exchange(server, client, code, verifier).status_code == 200  # the code was not spent


@pytest.mark.parametrize(
    "authorization",
    ["Basic !!!not-base64!!!", "Basic ", "Basic " + b64(b"no-colon"), "Basic " + b64(b"\xff\xfe:\xff"), "Basic a"],
    ids=["garbage", "empty", "no-colon", "not-utf8", "truncated"],
)
def test_basic_auth_with_garbage_is_invalid_client(server: Server, shop: Path, authorization: str) -> None:
    client = confidential(shop)
    code, verifier = code_for(server, client)
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier}
    answer = requests.post(
        server.base + "/oauth/token", data=data, headers={"Authorization": authorization}, timeout=TIMEOUT
    )
    assert_invalid_client(answer, basic=False)
    assert sessions_of(shop, client["id"]) == 0

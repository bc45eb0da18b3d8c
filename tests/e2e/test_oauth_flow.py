"""The OAuth 2 code flow as a third-party app runs it: authlib's own client (OAuth2Session,
not Tillbox's code) against a real server on a free port, the authorization page driven by
its HTML forms as a browser would submit them; PyJWT verifies the access token."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session

from tests.e2e.test_cli import PASSWORD, create_user, tillbox
from tests.harness import Server, environment

REDIRECT = "https://app.example.com/callback"


class Forms(HTMLParser):
    """The forms of a page: their fields (hidden and typed) and their buttons."""

    def __init__(self, page: str):
        super().__init__()
        self.forms: list[dict[str, object]] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "form":
            self.forms.append({"action": values.get("action"), "fields": [], "buttons": []})
        elif tag == "input" and self.forms:
            self.forms[-1]["fields"].append((values.get("name"), values.get("value") or ""))  # type: ignore[attr-defined]
        elif tag == "button" and self.forms:
            self.forms[-1]["buttons"].append((values.get("name"), values.get("value")))  # type: ignore[attr-defined]


def submit(browser: requests.Session, base: str, page: str, decision: str, **typed: str) -> requests.Response:
    (form,) = Forms(page).forms
    fields = [(name, typed.get(str(name), value)) for name, value in form["fields"] if name]  # type: ignore[attr-defined]
    assert ("decision", decision) in form["buttons"]  # type: ignore[operator]
    return browser.post(base + str(form["action"]), data=[*fields, ("decision", decision)], allow_redirects=False)


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    create_user(tmp_path)  # admin@example.com
    create_user(tmp_path, "customer@example.com", "customer")
    return tmp_path


@pytest.fixture
def server(shop: Path) -> Iterator[Server]:
    with Server(shop) as running:
        yield running


def register(shop: Path, *args: str) -> dict[str, str]:
    made = tillbox("clients", "create", "--name", "Reports", "--redirect-uri", REDIRECT, "--json", *args, cwd=shop)
    assert made.returncode == 0, made.stderr
    return json.loads(made.stdout)  # type: ignore[no-any-return]


def authorize(server: Server, session: OAuth2Session, verifier: str, email: str, scope: str) -> str:
    """The page as a user goes through it: sign in, approve if asked; the redirect's URL."""
    url, state = session.create_authorization_url(server.base + "/oauth/authorize", code_verifier=verifier)
    browser = requests.Session()
    page = browser.get(url, allow_redirects=False)
    assert page.status_code == 200, page.text
    assert "Content-Security-Policy" in page.headers and "<script" not in page.text
    answer = submit(browser, server.base, page.text, "approve", email=email, password=PASSWORD)
    if answer.status_code == 200:  # the consent step
        assert "Approve" in answer.text
        answer = submit(browser, server.base, answer.text, "approve")
    assert answer.status_code == 302, answer.text
    location = answer.headers["Location"]
    assert location.startswith(REDIRECT + "?")
    assert parse_qs(urlsplit(location).query)["state"] == [state]
    return location


def session_for(client: dict[str, str], scope: str) -> OAuth2Session:
    return OAuth2Session(
        client["id"],
        client.get("client_secret"),
        scope=scope,
        redirect_uri=REDIRECT,
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_basic" if client.get("client_secret") else "none",
    )


def test_code_flow_refresh_scopes_and_revocation(server: Server, shop: Path) -> None:
    client = register(
        shop,
        "--type",
        "confidential",
        "--grant",
        "authorization_code",
        "--grant",
        "refresh_token",
        "--scope",
        "orders:read catalog:read",
    )
    session = session_for(client, "orders:read catalog:read")
    verifier = secrets.token_urlsafe(48)
    location = authorize(server, session, verifier, "admin@example.com", "orders:read catalog:read")
    token = session.fetch_token(server.base + "/oauth/token", authorization_response=location, code_verifier=verifier)
    assert token["token_type"].lower() == "bearer"
    assert set(token["scope"].split()) == {"orders:read", "catalog:read"}

    # The access token is Tillbox's JWT, verifiable with the served keys, naming the client.
    key = jwt.PyJWKClient(server.base + "/.well-known/jwks.json").get_signing_key_from_jwt(token["access_token"])
    claims = jwt.decode(token["access_token"], key, algorithms=["EdDSA"], audience="tillbox-api", issuer="tillbox")
    assert claims["client_id"] == client["id"]
    assert set(claims["scope"].split()) == {"orders:read", "catalog:read"}

    # Within its scopes, and beyond them (the admin's role would allow it; the grant does not).
    assert session.get(server.base + "/api/v1/orders").status_code == 200
    refused = session.post(server.base + "/api/v1/products", json={"sku": "X-1", "name": "X", "price": 100})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "insufficient_scope"
    assert 'scope="catalog:write"' in refused.headers["WWW-Authenticate"]

    # Refresh: a new pair; the old refresh token presented again ends the whole session.
    old_refresh = token["refresh_token"]
    renewed = session.refresh_token(server.base + "/oauth/token", refresh_token=old_refresh)
    assert renewed["refresh_token"] != old_refresh
    assert session.get(server.base + "/api/v1/orders").status_code == 200
    replay = requests.post(
        server.base + "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": old_refresh},
        auth=(client["id"], client["client_secret"]),
        timeout=10,
    )
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert session.get(server.base + "/api/v1/orders").status_code == 401  # the renewed access token too

    # A fresh authorization (remembered consent: no approval step), then revocation.
    verifier = secrets.token_urlsafe(48)
    location = authorize(server, session, verifier, "admin@example.com", "orders:read catalog:read")
    token = session.fetch_token(server.base + "/oauth/token", authorization_response=location, code_verifier=verifier)
    assert session.get(server.base + "/api/v1/orders").status_code == 200
    revoked = session.revoke_token(server.base + "/oauth/revoke", token["refresh_token"])
    assert revoked.status_code == 200
    assert session.get(server.base + "/api/v1/orders").status_code == 401


def test_a_public_client_bound_by_pkce_and_a_code_used_twice(server: Server, shop: Path) -> None:
    client = register(shop, "--type", "public", "--grant", "authorization_code", "--scope", "orders:read")
    session = session_for(client, "orders:read")
    verifier = secrets.token_urlsafe(48)
    location = authorize(server, session, verifier, "customer@example.com", "orders:read")
    code = parse_qs(urlsplit(location).query)["code"][0]

    # A wrong verifier is refused and spends nothing: the client that holds the right one can
    # still exchange the code (once).
    wrong = requests.post(
        server.base + "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": client["id"],
            "code_verifier": secrets.token_urlsafe(48),
        },
        timeout=10,
    )
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    token = session.fetch_token(server.base + "/oauth/token", authorization_response=location, code_verifier=verifier)
    assert "refresh_token" not in token  # the client may not refresh
    assert session.get(server.base + "/api/v1/orders").status_code == 200

    # The same code again: refused, and the session it began ends.
    again = requests.post(
        server.base + "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": client["id"],
            "code_verifier": verifier,
        },
        timeout=10,
    )
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert session.get(server.base + "/api/v1/orders").status_code == 401


def test_the_user_lists_the_apps_approved_and_takes_one_back(server: Server, shop: Path) -> None:
    client = register(shop, "--type", "public", "--grant", "authorization_code", "--scope", "orders:read")
    session = session_for(client, "orders:read")
    verifier = secrets.token_urlsafe(48)
    location = authorize(server, session, verifier, "customer@example.com", "orders:read")
    session.fetch_token(server.base + "/oauth/token", authorization_response=location, code_verifier=verifier)
    assert session.get(server.base + "/api/v1/orders").status_code == 200

    first_party = requests.post(
        server.base + "/api/v1/auth/login",
        json={"email": "customer@example.com", "password": PASSWORD},
        timeout=10,
    ).json()["access_token"]
    me = {"Authorization": f"Bearer {first_party}"}
    listed = requests.get(server.base + "/api/v1/users/me/authorizations", headers=me, timeout=10).json()
    assert [(a["client_id"], a["client_name"], a["scopes"]) for a in listed["data"]] == [
        (client["id"], "Reports", ["orders:read"])
    ]
    # The app itself may not see or take back approvals: it was not granted users:read.
    assert session.get(server.base + "/api/v1/users/me/authorizations").status_code == 403

    gone = requests.delete(server.base + f"/api/v1/users/me/authorizations/{client['id']}", headers=me, timeout=10)
    assert gone.status_code == 204
    assert session.get(server.base + "/api/v1/orders").status_code == 401  # at once
    listed = requests.get(server.base + "/api/v1/users/me/authorizations", headers=me, timeout=10).json()
    assert listed["data"] == []
    again = requests.delete(server.base + f"/api/v1/users/me/authorizations/{client['id']}", headers=me, timeout=10)
    assert again.status_code == 404 and again.json()["error"]["code"] == "authorization_not_found"


def test_a_service_acting_as_itself_with_client_credentials(server: Server, shop: Path) -> None:
    client = register(shop, "--type", "confidential", "--grant", "client_credentials", "--scope", "catalog:write")
    service = OAuth2Session(client["id"], client["client_secret"], token_endpoint_auth_method="client_secret_basic")
    token = service.fetch_token(server.base + "/oauth/token", grant_type="client_credentials")
    assert token["scope"] == "catalog:write" and "refresh_token" not in token
    key = jwt.PyJWKClient(server.base + "/.well-known/jwks.json").get_signing_key_from_jwt(token["access_token"])
    claims = jwt.decode(token["access_token"], key, algorithms=["EdDSA"], audience="tillbox-api", issuer="tillbox")
    assert claims["sub"] == claims["client_id"] == client["id"]  # RFC 9068 §2.2

    made = service.post(
        server.base + "/api/v1/products", json={"sku": "SVC-1", "name": "Made by a service", "price": 500}
    )
    assert made.status_code == 201, made.text
    assert service.get(server.base + "/api/v1/orders").status_code == 403  # orders:read not granted
    # Its changes are audited under its client id.
    admin = requests.post(
        server.base + "/api/v1/auth/login", json={"email": "admin@example.com", "password": PASSWORD}, timeout=10
    ).json()["access_token"]
    audit = requests.get(
        server.base + "/api/v1/admin/audit",
        params={"action": "product.created"},
        headers={"Authorization": f"Bearer {admin}"},
        timeout=10,
    ).json()["data"]
    assert [entry["actor_id"] for entry in audit] == [client["id"]]

    # A scope it was not registered for is refused; a public client may not use this grant.
    wider = requests.post(
        server.base + "/oauth/token",
        data={"grant_type": "client_credentials", "scope": "catalog:write audit:read"},
        auth=(client["id"], client["client_secret"]),
        timeout=10,
    )
    assert wider.status_code == 400 and wider.json()["error"] == "invalid_scope"

    # Disabled: its token is refused at once.
    disabled = tillbox("clients", "disable", client["id"], cwd=shop)
    assert disabled.returncode == 0, disabled.stderr
    assert service.get(server.base + "/api/v1/products").status_code == 401


def test_the_authorization_page_ignores_parameters_it_does_not_know(server: Server, shop: Path) -> None:
    # RFC 6749 §3.1: unknown request parameters are ignored (OpenID Connect's, for one).
    client = register(shop, "--type", "public", "--grant", "authorization_code", "--scope", "orders:read")
    session = session_for(client, "orders:read")
    url, _ = session.create_authorization_url(
        server.base + "/oauth/authorize", code_verifier=secrets.token_urlsafe(48), nonce="n-1", prompt="login"
    )
    page = requests.get(url, allow_redirects=False, timeout=10)
    assert page.status_code == 200 and "Reports wants to use your account" in page.text
    assert 'name="nonce" value="n-1"' in page.text  # carried through the form, as sent


def test_a_service_never_acts_as_an_admin_beyond_the_operation_at_hand(server: Server, shop: Path) -> None:
    # audit:read is an admin's scope; it must not make users:write an admin's power over accounts.
    client = register(
        shop, "--type", "confidential", "--grant", "client_credentials", "--scope", "users:write audit:read"
    )
    service = OAuth2Session(client["id"], client["client_secret"], token_endpoint_auth_method="client_secret_basic")
    service.fetch_token(server.base + "/oauth/token", grant_type="client_credentials")
    assert service.get(server.base + "/api/v1/admin/audit").status_code == 200
    customer_id = json.loads(tillbox("users", "list", "--json", cwd=shop).stdout)
    target = next(u["id"] for u in customer_id if u["email"] == "customer@example.com")
    promoted = service.patch(server.base + f"/api/v1/users/{target}", json={"role": "admin"})
    assert promoted.status_code == 403 and promoted.json()["error"]["code"] == "forbidden"
    users = json.loads(tillbox("users", "list", "--json", cwd=shop).stdout)
    assert next(u["role"] for u in users if u["email"] == "customer@example.com") == "customer"


def test_with_its_public_url_as_issuer_the_metadata_and_the_tokens_agree(shop: Path) -> None:
    # RFC 8414 §3.3: a client checks the metadata's issuer; RFC 9068: a resource server checks
    # the token's iss against it. Both are auth.issuer once it is the shop's URL.
    with Server(shop, env=environment({"TILLBOX_AUTH_ISSUER": "https://shop.example.com"})) as running:
        metadata = requests.get(running.base + "/.well-known/oauth-authorization-server", timeout=10).json()
        assert metadata["issuer"] == "https://shop.example.com"
        assert metadata["token_endpoint"] == "https://shop.example.com/oauth/token"
        client = register(shop, "--type", "confidential", "--grant", "client_credentials", "--scope", "catalog:read")
        service = OAuth2Session(client["id"], client["client_secret"])
        token = service.fetch_token(running.base + "/oauth/token", grant_type="client_credentials")
        key = jwt.PyJWKClient(running.base + "/.well-known/jwks.json").get_signing_key_from_jwt(token["access_token"])
        claims = jwt.decode(
            token["access_token"], key, algorithms=["EdDSA"], audience="tillbox-api", issuer=metadata["issuer"]
        )
        assert claims["iss"] == "https://shop.example.com"

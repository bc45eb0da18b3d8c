"""The JWKS: a resource server verifies Tillbox's access tokens itself, with an independent JWT
library (PyJWT) and the served key set, across a key rotation."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from tests.e2e.test_cli import PASSWORD, _post, create_user, tillbox
from tests.harness import Server, until

ADMIN_SCOPES = (
    "catalog:read catalog:write orders:read orders:write payments:write refunds:write users:read users:write"
    " audit:read webhooks:write clients:read clients:write"
)


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    create_user(tmp_path)
    return tmp_path


@pytest.fixture
def server(shop: Path) -> Iterator[Server]:
    with Server(shop) as running:
        yield running


def _token(server: Server) -> str:
    _, tokens = _post(server.base + "/api/v1/auth/login", {"email": "admin@example.com", "password": PASSWORD})
    return str(tokens["access_token"])


def _verify(server: Server, token: str) -> dict[str, object]:
    # A new client each time: no key set cached from before the rotation.
    signing_key = jwt.PyJWKClient(server.base + "/.well-known/jwks.json", cache_keys=False).get_signing_key_from_jwt(
        token
    )
    assert jwt.get_unverified_header(token)["typ"] == "at+jwt"
    return dict(
        jwt.decode(
            token,
            signing_key,
            algorithms=["EdDSA"],
            audience="tillbox-api",
            issuer="tillbox",
            options={"require": ["exp", "iat", "sub", "jti", "client_id"]},
        )
    )


def _key_set(server: Server) -> tuple[dict[str, object], dict[str, str]]:
    with urllib.request.urlopen(server.base + "/.well-known/jwks.json") as response:
        return json.loads(response.read()), dict(response.headers)


def test_a_token_verifies_with_the_served_key_set_and_carries_rfc_9068s_claims(server: Server) -> None:
    claims = _verify(server, _token(server))
    assert claims["client_id"] == "tillbox"
    assert claims["scope"] == ADMIN_SCOPES
    assert str(claims["sub"]).startswith("usr_")
    key_set, headers = _key_set(server)
    assert headers["Content-Type"].startswith("application/jwk-set+json")
    assert headers["Cache-Control"] == "public, max-age=60"
    (key,) = key_set["keys"]  # type: ignore[misc]
    assert set(key) == {"kty", "crv", "x", "kid", "use", "alg"}  # public parts only: no "d"
    assert (key["kty"], key["crv"], key["alg"], key["use"]) == ("OKP", "Ed25519", "EdDSA", "sig")


def test_after_keys_rotate_old_and_new_tokens_both_verify_by_kid(server: Server, shop: Path) -> None:
    old = _token(server)
    result = tillbox("keys", "rotate", cwd=shop)
    assert result.returncode == 0, result.stderr
    kid = result.stdout.split()[3].rstrip(";")
    new = until(
        lambda: token if jwt.get_unverified_header(token := _token(server))["kid"] == kid else None,
        timeout=30,
        every=0.2,
        what="a token signed with the new key",
    )
    assert jwt.get_unverified_header(old)["kid"] != kid
    key_set, _ = _key_set(server)
    kids = [key["kid"] for key in key_set["keys"]]  # type: ignore[attr-defined]
    assert len(kids) == 2 and kids[0] == kid  # newest first, the previous one still there
    assert _verify(server, old)["sub"] == _verify(server, new)["sub"]


def test_a_token_signed_otherwise_fails_the_verifiers_checks(server: Server) -> None:
    token = _token(server)
    forged = jwt.encode(
        jwt.decode(token, options={"verify_signature": False}), "a shared secret of thirty-two bytes", algorithm="HS256"
    )
    with pytest.raises(jwt.PyJWKClientError):  # no such kid in the set
        _verify(server, forged)
    head, payload, signature = token.split(".")
    with pytest.raises(jwt.InvalidSignatureError):
        _verify(server, f"{head}.{payload}.{signature[:-4]}AAAA")

"""The rules of an OAuth client's registration (core/domain/oauth.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from core.domain.errors import ClientIsPublic, ValidationFailed
from core.domain.oauth import (
    ClientStatus,
    ClientType,
    GrantType,
    OAuthClient,
    check_client_name,
    check_redirect_uris,
    redirect_uri_problem,
)
from tests.unit.helpers import START

CODE = GrantType.AUTHORIZATION_CODE
REFRESH = GrantType.REFRESH_TOKEN
CREDENTIALS = GrantType.CLIENT_CREDENTIALS
HTTPS_ONLY = "must be https (http only on a loopback host: 127.0.0.1, [::1], localhost)"


def _register(**overrides: Any) -> OAuthClient:
    fields: dict[str, Any] = {
        "id": "cli_1",
        "name": "Shop app",
        "type": ClientType.CONFIDENTIAL,
        "redirect_uris": ["https://app.example.com/cb"],
        "grant_types": [CODE, REFRESH],
        "scopes": ["orders:read", "catalog:read"],
        "secret_digest": "digest",
        "at": START,
        "created_by": "usr_admin",
    }
    fields.update(overrides)
    return OAuthClient.register(**fields)


def _fields(caught: pytest.ExceptionInfo[ValidationFailed]) -> dict[str, str]:
    assert caught.value.code == "validation_failed"
    fields: dict[str, str] = caught.value.details["fields"]
    return fields


def test_a_registered_client_is_active_with_its_lists_in_a_canonical_order() -> None:
    client = _register(grant_types=[REFRESH, CODE, REFRESH], scopes=["orders:read", "catalog:read", "orders:read"])

    assert client.status is ClientStatus.ACTIVE
    assert client.grant_types == (CODE, REFRESH)
    assert client.scopes == ("catalog:read", "orders:read")  # the order of SCOPES
    assert client.redirect_uris == ("https://app.example.com/cb",)
    assert (client.secret_digest, client.secret_rotated_at, client.created_at, client.updated_at) == (
        "digest",
        START,
        START,
        START,
    )


@pytest.mark.parametrize(
    "uri",
    [
        "https://app.example.com/cb",
        "https://app.example.com:8443/oauth/callback?tenant=7&x=%20y",
        "https://10.1.2.3/cb",
        "http://127.0.0.1:8400/cb",
        "http://[::1]:8400/cb",
        "http://localhost/cb",
        "https://[2001:db8::1]/cb",
    ],
)
def test_redirect_uris_that_can_be_compared_exactly_are_accepted(uri: str) -> None:
    assert redirect_uri_problem(uri) is None


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("https://app.example.com/cb#done", "must not have a fragment (#...)"),
        ("https://app.example.com/cb#", "must not have a fragment (#...)"),
        ("https://*.example.com/cb", "must not have wildcards (*): it is compared exactly"),
        ("https://app.example.com/*", "must not have wildcards (*): it is compared exactly"),
        ("https://user:pass@app.example.com/cb", "must not have a user name or password (...@)"),
        ("https://app.example.com@evil.example/cb", "must not have a user name or password (...@)"),
        ("http://app.example.com/cb", HTTPS_ONLY),
        ("http://127.0.0.2/cb", HTTPS_ONLY),
        ("http://localhost.evil.example/cb", HTTPS_ONLY),
        ("javascript:alert(1)", "must be an absolute URI (https://host/path)"),
        ("javascript://app.example.com/%0aalert(1)", HTTPS_ONLY.replace("must be https", "must be an https URI")),
        ("data://text/html,x", HTTPS_ONLY.replace("must be https", "must be an https URI")),
        ("ftp://files.example.com/cb", HTTPS_ONLY.replace("must be https", "must be an https URI")),
        ("com.example.app:/cb", "must be an absolute URI (https://host/path)"),
        ("/oauth/callback", "must be an absolute URI (https://host/path)"),
        ("//app.example.com/cb", "must be an absolute URI (https://host/path)"),
        ("app.example.com/cb", "must be an absolute URI (https://host/path)"),
        ("", "must not be empty"),
        ("https://", "must name a valid host (and port)"),
        ("https:///cb", "must name a valid host (and port)"),
        ("https://app.example.com:99999/cb", "must name a valid host (and port)"),
        ("https://app.example.com:/cb", "must name a valid host (and port)"),
        ("https://app.exa_mple.com/cb", "must name a valid host (and port)"),
        ("https://[::1/cb", "must name a valid host (and port)"),
        (
            "https://app.example.com/c b",
            "has characters a URI cannot hold (spaces, controls, non-ASCII): percent-encode them",
        ),
        (
            "https://app.example.com/cb\n",
            "has characters a URI cannot hold (spaces, controls, non-ASCII): percent-encode them",
        ),
        (
            "https://app.example.com\\@evil.example",
            "has characters a URI cannot hold (spaces, controls, non-ASCII): percent-encode them",
        ),
        (
            "https://bücher.example/cb",
            "has characters a URI cannot hold (spaces, controls, non-ASCII): percent-encode them",
        ),
        ("HTTPS://app.example.com/cb", "must have its scheme in lower case"),
        ("https://App.Example.com/cb", "must have its host in lower case"),
        ("https://app.example.com/" + "a" * 2000, "must have at most 2000 characters"),
    ],
)
def test_redirect_uris_that_are_not_one_exact_uri_are_refused(uri: str, problem: str) -> None:
    assert redirect_uri_problem(uri) == problem


def test_the_list_of_redirect_uris_names_each_bad_one_and_each_repeat() -> None:
    with pytest.raises(ValidationFailed) as caught:
        check_redirect_uris(
            ["https://a.example/cb", "https://a.example/cb#x", "https://b.example/", "https://a.example/cb"]
        )
    assert _fields(caught) == {
        "redirect_uris[1]": "must not have a fragment (#...)",
        "redirect_uris[3]": "repeats redirect_uris[0]",
    }
    with pytest.raises(ValidationFailed) as caught:
        check_redirect_uris([])
    assert _fields(caught) == {"redirect_uris": "must have at least one redirect URI"}
    with pytest.raises(ValidationFailed) as caught:
        check_redirect_uris([f"https://a.example/{n}" for n in range(11)])
    assert _fields(caught) == {"redirect_uris": "must have at most 10 redirect URIs"}
    assert check_redirect_uris([f"https://a.example/{n}" for n in range(10)])[9] == "https://a.example/9"


@pytest.mark.parametrize(
    ("name", "expected"),
    [("  Reports  ", "Reports"), ("x" * 100, "x" * 100), ("Caf\u00e9 \u2014 till 2", "Caf\u00e9 \u2014 till 2")],
)
def test_names_are_trimmed(name: str, expected: str) -> None:
    assert check_client_name(name) == expected


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("   ", "must not be empty"),
        ("", "must not be empty"),
        ("x" * 101, "must have at most 100 characters"),
        ("Shop\x00app", "cannot contain control characters"),
        ("Shop\x1bapp", "cannot contain control characters"),
        ("Shop\nApp", "cannot contain control characters"),
        ("Shop\u2028App", "cannot contain control characters"),
        ("Shop \u202eppa", "cannot contain control characters"),
    ],
)
def test_bad_names_are_refused(name: str, problem: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        check_client_name(name)
    assert _fields(caught) == {"name": problem}


@pytest.mark.parametrize(
    ("client_type", "grants", "problem"),
    [
        (ClientType.CONFIDENTIAL, [], "must have at least one grant type"),
        (ClientType.CONFIDENTIAL, [REFRESH], "refresh_token needs authorization_code"),
        (ClientType.CONFIDENTIAL, [REFRESH, CREDENTIALS], "refresh_token needs authorization_code"),
        (ClientType.PUBLIC, [CREDENTIALS], "client_credentials is only for confidential clients"),
        (ClientType.PUBLIC, [CODE, CREDENTIALS], "client_credentials is only for confidential clients"),
    ],
)
def test_grants_follow_their_rules(client_type: ClientType, grants: list[GrantType], problem: str) -> None:
    digest = "digest" if client_type is ClientType.CONFIDENTIAL else None
    with pytest.raises(ValidationFailed) as caught:
        _register(type=client_type, grant_types=grants, secret_digest=digest)
    assert _fields(caught) == {"grant_types": problem}


def test_a_public_client_may_use_codes_and_refresh_tokens_and_has_no_secret() -> None:
    client = _register(type=ClientType.PUBLIC, grant_types=[CODE, REFRESH], secret_digest=None)
    assert (client.grant_types, client.secret_digest, client.secret_rotated_at) == ((CODE, REFRESH), None, None)
    assert _register(grant_types=[CREDENTIALS]).grant_types == (CREDENTIALS,)


def test_scopes_are_known_ones_and_at_least_one() -> None:
    with pytest.raises(ValidationFailed) as caught:
        _register(scopes=["orders:read", "everything", "admin:*"])
    assert _fields(caught) == {"scopes": "has unknown scopes: admin:*, everything"}
    with pytest.raises(ValidationFailed) as caught:
        _register(scopes=[])
    assert _fields(caught) == {"scopes": "must have at least one scope"}


def test_every_wrong_field_is_named_at_once() -> None:
    with pytest.raises(ValidationFailed) as caught:
        _register(name=" ", redirect_uris=["http://app.example.com/"], grant_types=[REFRESH], scopes=["nope"])
    assert _fields(caught) == {
        "name": "must not be empty",
        "redirect_uris[0]": HTTPS_ONLY,
        "grant_types": "refresh_token needs authorization_code",
        "scopes": "has unknown scopes: nope",
    }


def test_update_changes_all_or_nothing_and_says_what_changed() -> None:
    client = _register()
    later = START + timedelta(minutes=1)

    with pytest.raises(ValidationFailed) as caught:
        client.update(at=later, name="Renamed", redirect_uris=["https://app.example.com/cb#x"])
    assert _fields(caught) == {"redirect_uris[0]": "must not have a fragment (#...)"}
    assert (client.name, client.updated_at) == ("Shop app", START)

    changes = client.update(at=later, name="Renamed", scopes=["catalog:read", "orders:read"], grant_types=[CODE])
    assert changes == {
        "name": {"before": "Shop app", "after": "Renamed"},
        "grant_types": {"before": ["authorization_code", "refresh_token"], "after": ["authorization_code"]},
    }
    assert (client.name, client.grant_types, client.updated_at) == ("Renamed", (CODE,), later)

    assert client.update(at=later + timedelta(minutes=1), name=" Renamed ") == {}
    assert client.updated_at == later


def test_a_public_client_cannot_be_given_client_credentials_by_an_update() -> None:
    client = _register(type=ClientType.PUBLIC, grant_types=[CODE], secret_digest=None)
    with pytest.raises(ValidationFailed) as caught:
        client.update(at=START, grant_types=[CODE, CREDENTIALS])
    assert _fields(caught) == {"grant_types": "client_credentials is only for confidential clients"}
    assert client.grant_types == (CODE,)


def test_disable_enable_and_rotate() -> None:
    client = _register()
    later = START + timedelta(hours=1)

    assert client.disable(at=later) is True
    assert (client.status, client.is_active, client.updated_at) == (ClientStatus.DISABLED, False, later)
    assert client.disable(at=later + timedelta(hours=1)) is False
    assert client.updated_at == later
    assert client.enable(at=later) is True
    assert client.enable(at=later) is False

    client.rotate_secret("new digest", at=later)
    assert (client.secret_digest, client.secret_rotated_at) == ("new digest", later)

    public = _register(type=ClientType.PUBLIC, grant_types=[CODE], secret_digest=None)
    with pytest.raises(ClientIsPublic):
        public.rotate_secret("digest", at=later)
    assert public.secret_digest is None


def test_what_the_authorization_server_asks_of_a_client() -> None:
    client = _register(redirect_uris=["https://app.example.com/cb", "http://127.0.0.1:8400/cb"])

    assert client.allows_redirect_uri("https://app.example.com/cb")
    assert not client.allows_redirect_uri("https://app.example.com/cb/")
    assert not client.allows_redirect_uri("https://app.example.com/cb?x=1")
    assert not client.allows_redirect_uri("https://APP.example.com/cb")
    assert not client.allows_redirect_uri("http://127.0.0.1:8401/cb")
    assert client.allows_grant(CODE) and not client.allows_grant(CREDENTIALS)
    assert client.allows_scopes(["orders:read"]) and client.allows_scopes([])
    assert not client.allows_scopes(["orders:read", "orders:write"])

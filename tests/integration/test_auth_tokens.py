"""JWT access tokens and their signing keys, on a real key directory."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import pathlib
import stat
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from dependency_injector import providers
from joserfc import jwt
from joserfc.jwk import ECKey

import adapters.auth.tokens as tokens_module
from adapters.auth.keys import SigningKeys
from adapters.auth.tokens import JwtAccessTokens
from core.domain.errors import TokenInvalid
from core.domain.scopes import ROLE_SCOPES, format_scopes
from core.domain.users import Role
from entrypoints.container import build_container, provide, stop
from entrypoints.settings import load_settings
from tests.fakes import FixedClock

ISSUER = "https://shop.example"
AUDIENCE = "tillbox-api"
TTL = 900
LEEWAY = 30
RETENTION = TTL + 60  # after a rotation, old keys verify for the token lifetime + 60 s


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segments(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    return json.loads(base64.urlsafe_b64decode(pad(header))), json.loads(base64.urlsafe_b64decode(pad(payload)))


def ed25519_token(private_key: Ed25519PrivateKey, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """Signed here with `cryptography`, independently of the code under test."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(private_key.sign(signing_input.encode()))}"


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
def key_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "keys"


@pytest.fixture
def keys(key_dir: pathlib.Path, clock: FixedClock) -> SigningKeys:
    return SigningKeys(key_dir, clock=clock)


@pytest.fixture
def tokens(keys: SigningKeys, clock: FixedClock) -> JwtAccessTokens:
    return JwtAccessTokens(keys, issuer=ISSUER, audience=AUDIENCE, ttl_seconds=TTL, clock=clock, leeway_seconds=LEEWAY)


@pytest.fixture
def now(clock: FixedClock) -> int:
    return int(clock.now().timestamp())


@pytest.fixture
def good_header(keys: SigningKeys) -> dict[str, Any]:
    kid, _ = keys.signing_key()
    return {"alg": "EdDSA", "kid": kid, "typ": "at+jwt"}


@pytest.fixture
def good_claims(now: int) -> dict[str, Any]:
    return {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "usr_1",
        "role": "staff",
        "sid": "fam_1",
        "iat": now,
        "exp": now + TTL,
        "jti": "j1",
    }


@pytest.fixture
def sign(keys: SigningKeys) -> Callable[[dict[str, Any], dict[str, Any]], str]:
    """Sign any header and claims with the real signing key."""
    _, key = keys.signing_key()
    private = key.private_key
    assert isinstance(private, Ed25519PrivateKey)
    return lambda header, claims: ed25519_token(private, header, claims)


@pytest.fixture
def decode_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Tokens that went through full verification (signature and claims), in order."""
    calls: list[str] = []
    real_decode = jwt.decode

    def counting_decode(value: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(value)
        return real_decode(value, *args, **kwargs)

    monkeypatch.setattr(tokens_module.jwt, "decode", counting_decode)
    return calls


# Issuing and verifying.
@pytest.mark.parametrize("role", list(Role))
def test_round_trip(tokens: JwtAccessTokens, keys: SigningKeys, now: int, role: Role) -> None:
    issued = tokens.issue("usr_42", role, "fam_1")
    claims = tokens.verify(issued.token)
    assert (claims.user_id, claims.role, claims.session_id, claims.expires_at) == ("usr_42", role, "fam_1", now + TTL)
    assert issued.expires_in == TTL
    header, payload = segments(issued.token)
    assert header == {"alg": "EdDSA", "kid": keys.signing_key()[0], "typ": "at+jwt"}
    assert set(payload) == {"iss", "aud", "sub", "role", "sid", "client_id", "scope", "iat", "exp", "jti"}
    assert payload | {"jti": None} == {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "usr_42",
        "role": role.value,
        "sid": "fam_1",
        "client_id": "tillbox",
        "scope": format_scopes(ROLE_SCOPES[role]),
        "iat": now,
        "exp": now + TTL,
        "jti": None,
    }
    assert len(payload["jti"]) >= 16


def test_every_token_has_its_own_jti(tokens: JwtAccessTokens) -> None:
    jtis = {segments(tokens.issue("usr_1", Role.CUSTOMER, "fam_1").token)[1]["jti"] for _ in range(50)}
    assert len(jtis) == 50


def test_a_token_is_accepted_until_exp_plus_leeway(tokens: JwtAccessTokens, clock: FixedClock) -> None:
    token = tokens.issue("usr_1", Role.CUSTOMER, "fam_1").token
    clock.advance(seconds=TTL + LEEWAY - 1)
    assert tokens.verify(token).user_id == "usr_1"


def test_an_expired_token_is_rejected(tokens: JwtAccessTokens, clock: FixedClock) -> None:
    token = tokens.issue("usr_1", Role.CUSTOMER, "fam_1").token
    clock.advance(seconds=TTL + LEEWAY)
    with pytest.raises(TokenInvalid, match="expired"):
        tokens.verify(token)


def test_a_cached_token_is_rejected_once_expired(
    tokens: JwtAccessTokens, clock: FixedClock, decode_calls: list[str]
) -> None:
    token = tokens.issue("usr_1", Role.CUSTOMER, "fam_1").token
    tokens.verify(token)
    clock.advance(seconds=TTL + LEEWAY - 1)
    assert tokens.verify(token).user_id == "usr_1"
    assert decode_calls == [token]  # the second answer came from the cache
    clock.advance(seconds=1)
    with pytest.raises(TokenInvalid):
        tokens.verify(token)
    with pytest.raises(TokenInvalid, match="expired"):  # and it is not served from the cache again
        tokens.verify(token)
    assert decode_calls == [token, token]


def test_the_cache_is_bounded(keys: SigningKeys, clock: FixedClock, decode_calls: list[str]) -> None:
    small = JwtAccessTokens(keys, issuer=ISSUER, audience=AUDIENCE, clock=clock, cache_size=2)
    first, second, third = (small.issue(f"usr_{n}", Role.CUSTOMER, "fam_1").token for n in range(3))
    for token in (first, second, first, third):  # the third evicts the least recently used: second
        small.verify(token)
    assert decode_calls == [first, second, third]
    small.verify(first)
    small.verify(second)
    assert decode_calls == [first, second, third, second]


def test_failures_are_not_cached(
    sign: Callable[..., str],
    good_header: dict[str, Any],
    good_claims: dict[str, Any],
    tokens: JwtAccessTokens,
    decode_calls: list[str],
) -> None:
    token = sign(good_header, good_claims | {"aud": "someone-else"})
    for _ in range(2):
        with pytest.raises(TokenInvalid):
            tokens.verify(token)
    assert decode_calls == [token, token]


def test_a_token_made_the_same_way_verifies(
    sign: Callable[..., str], good_header: dict[str, Any], good_claims: dict[str, Any], tokens: JwtAccessTokens
) -> None:
    # The forging helpers below are only meaningful if a correct token made with them passes.
    assert tokens.verify(sign(good_header, good_claims)).role is Role.STAFF


# What is refused.
def test_alg_none_is_rejected(
    tokens: JwtAccessTokens, good_header: dict[str, Any], good_claims: dict[str, Any]
) -> None:
    for alg in ("none", "None", "NONE"):
        header = good_header | {"alg": alg}
        unsigned = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(good_claims).encode())}."
        with pytest.raises(TokenInvalid):
            tokens.verify(unsigned)


def test_a_token_signed_by_another_key_with_our_kid_is_rejected(
    tokens: JwtAccessTokens, good_header: dict[str, Any], good_claims: dict[str, Any]
) -> None:
    forged = ed25519_token(Ed25519PrivateKey.generate(), good_header, good_claims)
    with pytest.raises(TokenInvalid):
        tokens.verify(forged)


def test_hs256_keyed_with_our_public_key_is_rejected(
    tokens: JwtAccessTokens, keys: SigningKeys, good_header: dict[str, Any], good_claims: dict[str, Any]
) -> None:
    # The classic confusion attack: a verifier that trusts the header's alg would check an HMAC
    # keyed with the (public) verification key.
    _, key = keys.signing_key()
    public = key.public_key
    jwk = keys.public_jwks()["keys"][0]
    secrets = [
        public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        jwk["x"].encode(),
        json.dumps(jwk).encode(),
    ]
    header = good_header | {"alg": "HS256"}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(good_claims).encode())}"
    for secret in secrets:
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        with pytest.raises(TokenInvalid):
            tokens.verify(f"{signing_input}.{b64(mac)}")


def test_es256_is_rejected(tokens: JwtAccessTokens, good_header: dict[str, Any], good_claims: dict[str, Any]) -> None:
    ec_key = ECKey.generate_key("P-256")
    token = jwt.encode(good_header | {"alg": "ES256"}, good_claims, ec_key, algorithms=["ES256"], default_type=None)
    with pytest.raises(TokenInvalid):
        tokens.verify(token)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"iss": "https://evil.example"}, id="wrong iss"),
        pytest.param({"aud": "another-api"}, id="wrong aud"),
        pytest.param({"aud": ["another-api", "a-third"]}, id="wrong aud list"),
        pytest.param({"iss": None}, id="no iss"),
        pytest.param({"aud": None}, id="no aud"),
        pytest.param({"exp": None}, id="no exp"),
        pytest.param({"iat": None}, id="no iat"),
        pytest.param({"jti": None}, id="no jti"),
        pytest.param({"sub": None}, id="no sub"),
        pytest.param({"sub": ""}, id="empty sub"),
        pytest.param({"sub": 42}, id="sub not a string"),
        pytest.param({"role": None}, id="no role"),
        pytest.param({"role": "superuser"}, id="unknown role"),
        pytest.param({"role": ["admin"]}, id="role a list"),
        pytest.param({"role": "ADMIN"}, id="role in capitals"),
        pytest.param({"sid": None}, id="no session id"),
        pytest.param({"sid": ""}, id="empty session id"),
        pytest.param({"sid": 7}, id="session id not a string"),
        pytest.param({"exp": "9999999999"}, id="exp a string"),
        pytest.param({"exp": True}, id="exp a boolean"),
        pytest.param({"iat_offset": 3600}, id="issued in the future"),
        pytest.param({"nbf_offset": 3600}, id="not yet valid"),
        pytest.param({"exp_offset": -TTL - LEEWAY}, id="expired"),
    ],
)
def test_wrong_claims_are_rejected(
    sign: Callable[..., str],
    good_header: dict[str, Any],
    good_claims: dict[str, Any],
    tokens: JwtAccessTokens,
    now: int,
    changes: dict[str, Any],
) -> None:
    claims = dict(good_claims)
    for name, value in changes.items():
        if name.endswith("_offset"):
            claims[name.removesuffix("_offset")] = now + (TTL if name == "exp_offset" else 0) + value
        elif value is None:
            del claims[name]
        else:
            claims[name] = value
    with pytest.raises(TokenInvalid):
        tokens.verify(sign(good_header, claims))


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"typ": "JWT"}, id="typ JWT"),
        pytest.param({"typ": "at+JWT "}, id="typ almost"),
        pytest.param({"typ": None}, id="no typ"),
        pytest.param({"kid": None}, id="no kid"),
        pytest.param({"kid": 7}, id="kid a number"),
        pytest.param({"crit": ["exp"]}, id="unknown critical header"),
        pytest.param({"jku": "https://evil.example/jwks.json"}, id="jku"),
    ],
)
def test_wrong_headers_are_rejected(
    sign: Callable[..., str],
    good_header: dict[str, Any],
    good_claims: dict[str, Any],
    tokens: JwtAccessTokens,
    changes: dict[str, Any],
) -> None:
    header = {k: v for k, v in (good_header | changes).items() if v is not None}
    with pytest.raises(TokenInvalid):
        tokens.verify(sign(header, good_claims))


def test_a_tampered_payload_is_rejected(tokens: JwtAccessTokens, good_claims: dict[str, Any]) -> None:
    header, _, signature = tokens.issue("usr_1", Role.CUSTOMER, "fam_1").token.split(".")
    promoted = b64(json.dumps(good_claims | {"sub": "usr_1", "role": "admin"}).encode())
    with pytest.raises(TokenInvalid):
        tokens.verify(f"{header}.{promoted}.{signature}")


def test_a_tampered_signature_is_rejected(tokens: JwtAccessTokens) -> None:
    token = tokens.issue("usr_1", Role.CUSTOMER, "fam_1").token
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    for bad in (flipped, token[:-4], token + "AAAA", token.rsplit(".", 1)[0] + "."):
        with pytest.raises(TokenInvalid):
            tokens.verify(bad)


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        ".",
        "..",
        "a.b.c",
        "a.b",
        "a.b.c.d",
        "not base64!.@@@.###",
        "eyJ.eyJ.e",
        "ÿÿÿ.ÿÿÿ.ÿÿÿ",
        "Bearer abc",
        "x" * 10_000,
        ("eyJhbGciOiJFZERTQSJ9." * 500)[:10_000],
        b64(b"[" * 2000) + ".e30.AA",  # deeply nested header JSON
        b64(b'"a string header"') + ".e30.AA",
        b64(b"[1, 2]") + ".e30.AA",
        b64(b"null") + ".e30.AA",
        b64(json.dumps({"alg": "EdDSA", "typ": "at+jwt", "kid": "k"}).encode()) + ".!!!.AA",
    ],
)
def test_garbage_is_rejected(tokens: JwtAccessTokens, garbage: str) -> None:
    with pytest.raises(TokenInvalid) as raised:
        tokens.verify(garbage)
    assert raised.value.message in (
        "The token is invalid or expired.",
        "The token was signed with a key that is unknown or retired.",
    )


def test_an_unknown_kid_is_rejected(
    tokens: JwtAccessTokens, good_header: dict[str, Any], good_claims: dict[str, Any]
) -> None:
    stranger = Ed25519PrivateKey.generate()
    with pytest.raises(TokenInvalid, match="unknown or retired"):
        tokens.verify(ed25519_token(stranger, good_header | {"kid": "someone-elses-key"}, good_claims))


# Keys: rotation, retirement, files.
def test_after_a_rotation_new_tokens_carry_the_new_kid_and_old_ones_still_verify(
    tokens: JwtAccessTokens, keys: SigningKeys, clock: FixedClock
) -> None:
    old_kid = keys.signing_key()[0]
    old_token = tokens.issue("usr_1", Role.CUSTOMER, "fam_1").token
    clock.advance(seconds=10)
    new_kid = keys.rotate(TTL)
    new_token = tokens.issue("usr_2", Role.ADMIN, "fam_1").token
    assert new_kid != old_kid
    assert segments(new_token)[0]["kid"] == new_kid
    assert segments(old_token)[0]["kid"] == old_kid
    assert tokens.verify(old_token).user_id == "usr_1"
    assert tokens.verify(new_token).user_id == "usr_2"
    assert [k["kid"] for k in keys.public_jwks()["keys"]] == [new_kid, old_kid]


def test_retired_keys_stop_verifying_and_prune_deletes_them(
    tokens: JwtAccessTokens, keys: SigningKeys, clock: FixedClock, key_dir: pathlib.Path
) -> None:
    old_kid = keys.signing_key()[0]
    old_token = tokens.issue("usr_1", Role.CUSTOMER, "fam_1").token
    clock.advance(seconds=10)
    new_kid = keys.rotate(TTL)
    clock.advance(seconds=RETENTION)  # exactly at the end of the retention: still kept
    assert keys.prune() == []
    assert keys.verification_key(old_kid) is not None
    clock.advance(seconds=1)
    assert keys.verification_key(old_kid) is None  # retired, even before the file is gone
    assert keys.prune() == [old_kid]
    assert sorted(p.name for p in key_dir.glob("*.json")) == [f"{new_kid}.json"]
    assert [k["kid"] for k in keys.public_jwks()["keys"]] == [new_kid]
    with pytest.raises(TokenInvalid):
        tokens.verify(old_token)
    assert tokens.verify(tokens.issue("usr_2", Role.CUSTOMER, "fam_1").token).user_id == "usr_2"
    assert keys.prune() == []


def test_an_emergency_rotation_cuts_off_cached_tokens_of_the_old_key(
    tokens: JwtAccessTokens, keys: SigningKeys, clock: FixedClock
) -> None:
    # rotate(0): the old key only outlives the rotation by the 60 s leeway, even though its
    # tokens would still be valid for almost 15 minutes.
    token = tokens.issue("usr_1", Role.CUSTOMER, "fam_1").token
    assert tokens.verify(token).user_id == "usr_1"  # now cached
    keys.rotate(0)
    clock.advance(seconds=60)
    assert tokens.verify(token).user_id == "usr_1"
    clock.advance(seconds=1)
    with pytest.raises(TokenInvalid):
        tokens.verify(token)


def test_keys_older_than_several_rotations_retire_with_the_first_rotation_after_them(
    keys: SigningKeys, clock: FixedClock
) -> None:
    first = keys.signing_key()[0]
    clock.advance(seconds=100)
    second = keys.rotate(TTL)
    clock.advance(seconds=100)
    third = keys.rotate(TTL)
    clock.advance(seconds=RETENTION - 100 + 1)  # past the first rotation's retention, not the second's
    assert keys.prune() == [first]
    assert keys.verification_key(second) is not None
    clock.advance(seconds=100)
    assert keys.prune() == [second]
    assert keys.signing_key()[0] == third
    assert keys.prune() == []


def test_key_files_are_private(keys: SigningKeys, key_dir: pathlib.Path) -> None:
    keys.load()
    keys.rotate(TTL)
    assert stat.S_IMODE(key_dir.stat().st_mode) == 0o700
    files = list(key_dir.iterdir())
    assert len([f for f in files if f.suffix == ".json"]) == 2
    for file in files:
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file.name


def test_key_files_are_made_private_whatever_the_umask(key_dir: pathlib.Path, clock: FixedClock) -> None:
    old = os.umask(0)
    try:
        SigningKeys(key_dir, clock=clock).load()
    finally:
        os.umask(old)
    assert stat.S_IMODE(key_dir.stat().st_mode) == 0o700
    for file in key_dir.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o600


def test_the_public_jwks_holds_no_private_part(keys: SigningKeys) -> None:
    (jwk,) = keys.public_jwks()["keys"]
    assert set(jwk) == {"kty", "crv", "x", "kid", "use", "alg"}
    assert (jwk["kty"], jwk["crv"], jwk["use"], jwk["alg"]) == ("OKP", "Ed25519", "sig", "EdDSA")


def test_the_kid_is_the_rfc7638_thumbprint(keys: SigningKeys) -> None:
    (jwk,) = keys.public_jwks()["keys"]
    canonical = json.dumps({"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"]}, separators=(",", ":"))
    assert jwk["kid"] == b64(hashlib.sha256(canonical.encode()).digest())


def test_keys_survive_a_restart(keys: SigningKeys, key_dir: pathlib.Path, clock: FixedClock) -> None:
    token = (
        JwtAccessTokens(keys, issuer=ISSUER, audience=AUDIENCE, clock=clock).issue("usr_1", Role.STAFF, "fam_1").token
    )
    restarted = JwtAccessTokens(SigningKeys(key_dir, clock=clock), issuer=ISSUER, audience=AUDIENCE, clock=clock)
    assert restarted.verify(token).role is Role.STAFF


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("", id="empty"),
        pytest.param("{not json", id="not json"),
        pytest.param("[]", id="a list"),
        pytest.param('{"kid": "x"}', id="no key"),
        pytest.param('{"kid": "x", "created_at": "x", "retire_older_at": null, "jwk": {"kty": "OKP"}}', id="bad jwk"),
    ],
)
def test_a_corrupt_key_file_is_a_clear_error(key_dir: pathlib.Path, clock: FixedClock, content: str) -> None:
    SigningKeys(key_dir, clock=clock).load()
    bad = key_dir / "broken.json"
    bad.write_text(content)
    bad.chmod(0o600)
    with pytest.raises(ValueError, match=f"signing key file {bad} is corrupt"):
        SigningKeys(key_dir, clock=clock).load()


def test_a_public_key_alone_is_a_clear_error(key_dir: pathlib.Path, clock: FixedClock) -> None:
    SigningKeys(key_dir, clock=clock).load()
    (key_file,) = key_dir.glob("*.json")
    document = json.loads(key_file.read_text())
    del document["jwk"]["d"]
    key_file.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=f"signing key file {key_file} is corrupt .*not a private Ed25519 key"):
        SigningKeys(key_dir, clock=clock).load()


def test_a_key_file_under_another_name_is_a_clear_error(key_dir: pathlib.Path, clock: FixedClock) -> None:
    SigningKeys(key_dir, clock=clock).load()
    (original,) = key_dir.glob("*.json")
    renamed = original.rename(key_dir / "renamed.json")
    with pytest.raises(ValueError, match=f"signing key file {renamed} is corrupt"):
        SigningKeys(key_dir, clock=clock).load()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o700])
def test_a_key_file_readable_by_others_is_refused(key_dir: pathlib.Path, clock: FixedClock, mode: int) -> None:
    SigningKeys(key_dir, clock=clock).load()
    (key_file,) = key_dir.glob("*.json")
    key_file.chmod(mode)
    with pytest.raises(ValueError, match=f"signing key file {key_file} has mode {mode:04o}"):
        SigningKeys(key_dir, clock=clock).load()


def test_a_key_directory_writable_by_others_is_refused(key_dir: pathlib.Path, clock: FixedClock) -> None:
    SigningKeys(key_dir, clock=clock).load()
    key_dir.chmod(0o770)
    with pytest.raises(ValueError, match=f"signing key directory {key_dir} has mode 0770"):
        SigningKeys(key_dir, clock=clock).load()


def test_a_running_server_keeps_its_keys_if_a_broken_file_appears(
    key_dir: pathlib.Path, clock: FixedClock, tokens: JwtAccessTokens
) -> None:
    server = SigningKeys(key_dir, clock=clock, recheck_seconds=0)
    server_tokens = JwtAccessTokens(server, issuer=ISSUER, audience=AUDIENCE, clock=clock)
    token = server_tokens.issue("usr_1", Role.CUSTOMER, "fam_1").token
    broken = key_dir / "broken.json"
    broken.write_text("{")
    broken.chmod(0o600)
    clock.advance(seconds=1)
    assert server_tokens.verify(server_tokens.issue("usr_2", Role.CUSTOMER, "fam_1").token).user_id == "usr_2"
    assert server_tokens.verify(token).user_id == "usr_1"


# Several processes on one directory.
def test_another_process_rotation_is_used_for_signing(key_dir: pathlib.Path, clock: FixedClock) -> None:
    server = SigningKeys(key_dir, clock=clock, recheck_seconds=0)
    cli = SigningKeys(key_dir, clock=clock)
    old_kid = server.signing_key()[0]
    clock.advance(seconds=1)
    new_kid = cli.rotate(TTL)
    assert new_kid != old_kid
    assert server.signing_key()[0] == new_kid


def test_between_rechecks_a_server_does_not_look_at_the_directory(key_dir: pathlib.Path, clock: FixedClock) -> None:
    server = SigningKeys(key_dir, clock=clock, recheck_seconds=3600)
    old_kid = server.signing_key()[0]
    clock.advance(seconds=1)
    SigningKeys(key_dir, clock=clock).rotate(TTL)
    assert server.signing_key()[0] == old_kid


def test_a_token_from_another_process_new_key_verifies(key_dir: pathlib.Path, clock: FixedClock) -> None:
    server = SigningKeys(key_dir, clock=clock, recheck_seconds=3600)
    server_tokens = JwtAccessTokens(server, issuer=ISSUER, audience=AUDIENCE, clock=clock)
    server.load()
    other = SigningKeys(key_dir, clock=clock)
    other_tokens = JwtAccessTokens(other, issuer=ISSUER, audience=AUDIENCE, clock=clock)
    clock.advance(seconds=1)
    other.rotate(TTL)
    token = other_tokens.issue("usr_9", Role.ADMIN, "fam_1").token
    assert server_tokens.verify(token).user_id == "usr_9"


def test_unknown_kids_reload_the_directory_at_most_once_per_interval(key_dir: pathlib.Path, clock: FixedClock) -> None:
    server = SigningKeys(key_dir, clock=clock, recheck_seconds=3600, reload_seconds=3600)
    server_tokens = JwtAccessTokens(server, issuer=ISSUER, audience=AUDIENCE, clock=clock)
    server.load()
    other = SigningKeys(key_dir, clock=clock)
    other_tokens = JwtAccessTokens(other, issuer=ISSUER, audience=AUDIENCE, clock=clock)
    clock.advance(seconds=1)
    other.rotate(TTL)
    assert server_tokens.verify(other_tokens.issue("usr_1", Role.ADMIN, "fam_1").token).user_id == "usr_1"
    clock.advance(seconds=1)
    other.rotate(TTL)
    with pytest.raises(TokenInvalid, match="unknown"):  # the one reload of this interval is spent
        server_tokens.verify(other_tokens.issue("usr_2", Role.ADMIN, "fam_1").token)


def test_servers_starting_together_make_one_first_key(key_dir: pathlib.Path, clock: FixedClock) -> None:
    barrier = threading.Barrier(8)
    kids: list[str] = []

    def start() -> None:
        keys = SigningKeys(key_dir, clock=clock)
        barrier.wait()
        kids.append(keys.signing_key()[0])

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(kids)) == 1
    assert len(list(key_dir.glob("*.json"))) == 1


async def test_the_containers_keys_are_made_and_retired_by_the_containers_clock(tmp_path: pathlib.Path) -> None:
    clock = FixedClock(datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC))
    container = build_container(load_settings(None, {"TILLBOX_DATA_DIR": str(tmp_path / "data")}))
    container.clock.override(providers.Object(clock))
    try:
        keys = await provide(container.signing_keys)
        assert isinstance(keys, SigningKeys)
        keys.load()
        first = json.loads(next((tmp_path / "data" / "keys").glob("*.json")).read_text())
        assert first["created_at"] == "2031-05-06T07:08:09.000000Z"

        clock.advance(hours=1)
        kid = keys.rotate(TTL)
        rotated = json.loads((tmp_path / "data" / "keys" / f"{kid}.json").read_text())
        assert rotated["created_at"] == "2031-05-06T08:08:09.000000Z"
        assert rotated["retire_older_at"] == "2031-05-06T08:24:09.000000Z"  # + TTL + 60 s
        assert keys.verification_key(first["kid"]) is not None
        clock.advance(seconds=TTL + 61)  # retired by the same clock that made it
        assert keys.verification_key(first["kid"]) is None
    finally:
        await stop(container)

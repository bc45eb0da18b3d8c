"""Behind a reverse proxy: ``server.trusted_proxies`` decides whose forwarding header
(``server.proxy_header``: X-Forwarded-For or Forwarded) names the client, for the login
throttle, the audit log, the idempotency scope of anonymous callers and the access log.
The test client connects from 127.0.0.1: it plays the proxy, trusted or not."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from entrypoints.logs import AccessLog
from tests.e2e.conftest import PASSWORD, Api, assert_error, count_rows, serve

CLIENT_A = "203.0.113.7"
CLIENT_B = "198.51.100.9"


def forwarded_for(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


async def junk_login(api: Api, n: int, headers: dict[str, str]) -> int:
    """A wrong password for an account that does not exist (a new one each time, so that
    only the per-address limit can apply)."""
    status, body, _ = await api.call(
        "POST", "/api/v1/auth/login", json={"email": f"nobody{n}@example.com", "password": "wrong"}, headers=headers
    )
    if status == 429:
        assert_error(status, body, 429, "too_many_login_attempts")
    return status


async def login(api: Api, email: str, headers: dict[str, str]) -> tuple[int, Any]:
    status, body, _ = await api.call(
        "POST", "/api/v1/auth/login", json={"email": email, "password": PASSWORD}, headers=headers
    )
    return status, body


async def audit_sources(api: Api, action: str) -> list[str | None]:
    database = await api.container.database()
    rows = (
        database.reader_connection()
        .execute("SELECT source_ip FROM audit_log WHERE action = ? ORDER BY id", (action,))
        .fetchall()
    )
    return [row[0] for row in rows]


async def test_without_the_setting_forwarded_addresses_are_ignored(tmp_path: Path) -> None:
    """The default: every client of the proxy is the proxy, whatever the headers say, so 20
    junk logins through it throttle that one address (which is why the setting exists)."""
    async with serve(tmp_path / "data") as api:
        await api.create_user("kate@example.com")
        statuses = [await junk_login(api, n, forwarded_for(f"203.0.113.{n}")) for n in range(20)]
        assert statuses == [401] * 20
        assert await junk_login(api, 20, forwarded_for("203.0.113.200")) == 429
        status, body = await login(api, "kate@example.com", {"Forwarded": "for=198.51.100.1"})
        assert_error(status, body, 429, "too_many_login_attempts")
        assert set(await audit_sources(api, "auth.login_failed")) == {"127.0.0.1"}


async def test_behind_a_trusted_proxy_each_client_is_throttled_and_audited_apart(tmp_path: Path) -> None:
    async with serve(
        tmp_path / "data", TILLBOX_SERVER_TRUSTED_PROXIES="127.0.0.1", TILLBOX_AUTH_LOGIN_FAILURES_PER_IP="3"
    ) as api:
        await api.create_user("kate@example.com")
        assert [await junk_login(api, n, forwarded_for(CLIENT_A)) for n in range(4)] == [401, 401, 401, 429]
        # The other client, behind the same proxy, is untouched by the first one's failures.
        assert await junk_login(api, 10, forwarded_for(CLIENT_B)) == 401
        status, tokens = await login(api, "kate@example.com", forwarded_for(CLIENT_B))
        assert status == 200, tokens
        status, body = await login(api, "kate@example.com", forwarded_for(CLIENT_A))
        assert_error(status, body, 429, "too_many_login_attempts")
        assert await audit_sources(api, "auth.login_failed") == [CLIENT_A] * 3 + [CLIENT_B]
        assert await audit_sources(api, "auth.login_succeeded") == [CLIENT_B]


async def test_an_untrusted_peer_cannot_spoof_its_address(tmp_path: Path) -> None:
    async with serve(
        tmp_path / "data", TILLBOX_SERVER_TRUSTED_PROXIES="10.0.0.0/8", TILLBOX_AUTH_LOGIN_FAILURES_PER_IP="3"
    ) as api:
        spoofs = [forwarded_for(CLIENT_A), {"Forwarded": f"for={CLIENT_B}"}, forwarded_for("10.0.0.2")]
        assert [await junk_login(api, n, headers) for n, headers in enumerate(spoofs)] == [401, 401, 401]
        assert await junk_login(api, 3, forwarded_for("192.0.2.1")) == 429
        assert await audit_sources(api, "auth.login_failed") == ["127.0.0.1"] * 3


CHAINS = {
    "x-forwarded-for": [
        # Each proxy appends its peer: the client wrote 6.6.6.6 itself, 10.0.0.2 is a proxy.
        ({"X-Forwarded-For": f"6.6.6.6, {CLIENT_A}, 10.0.0.2"}, CLIENT_A),
        ({"X-Forwarded-For": "6.6.6.6", "x-forwarded-for": f"{CLIENT_B}:52110, 10.0.0.2"}, CLIENT_B),
        ({"X-Forwarded-For": "not an address"}, "127.0.0.1"),
        # The header the proxies do not write is not read, whatever it says.
        ({"X-Forwarded-For": CLIENT_A, "Forwarded": f"for={CLIENT_B}"}, CLIENT_A),
        ({"Forwarded": f"for={CLIENT_B}"}, "127.0.0.1"),
    ],
    "forwarded": [
        ({"Forwarded": 'for="[2001:db8:cafe::17]:4711";proto=https, for=10.0.0.2'}, "2001:db8:cafe::17"),
        ({"Forwarded": 'for=unknown, for="10.0.0.3:_hidden"'}, "10.0.0.3"),
        ({"Forwarded": "for=_obfuscated"}, "127.0.0.1"),
        ({"Forwarded": f"for={CLIENT_B}", "X-Forwarded-For": CLIENT_A}, CLIENT_B),
        ({"X-Forwarded-For": CLIENT_A}, "127.0.0.1"),
    ],
}


@pytest.mark.parametrize("header", CHAINS)
async def test_a_chain_of_proxies_in_the_one_header_they_write(tmp_path: Path, header: str) -> None:
    async with serve(
        tmp_path / "data",
        TILLBOX_SERVER_TRUSTED_PROXIES='["127.0.0.1", "10.0.0.0/8"]',
        TILLBOX_SERVER_PROXY_HEADER=header,
    ) as api:
        for n, (headers, _) in enumerate(CHAINS[header]):
            assert await junk_login(api, n, headers) == 401
        assert await audit_sources(api, "auth.login_failed") == [expected for _, expected in CHAINS[header]]


async def test_a_client_cannot_make_itself_the_proxy_by_adding_the_other_header(tmp_path: Path) -> None:
    """The proxy (127.0.0.1) appends the client to X-Forwarded-For, as nginx does, and passes
    on whatever else the client sent. A `Forwarded` of the client's own used to make the two
    disagree, and the request count as the proxy's: the failures of every client behind it
    in one throttle bucket, the proxy in the audit log."""
    async with serve(
        tmp_path / "data", TILLBOX_SERVER_TRUSTED_PROXIES="127.0.0.1", TILLBOX_AUTH_LOGIN_FAILURES_PER_IP="2"
    ) as api:
        spoofing = {"X-Forwarded-For": CLIENT_A, "Forwarded": "for=127.0.0.1"}
        assert [await junk_login(api, n, spoofing) for n in range(3)] == [401, 401, 429]
        assert await audit_sources(api, "auth.login_failed") == [CLIENT_A] * 2
        # The proxy's other clients are not in the spoofer's bucket.
        assert await junk_login(api, 10, forwarded_for(CLIENT_B)) == 401


async def test_what_a_client_wrote_left_of_its_address_is_not_read(tmp_path: Path) -> None:
    """60 KB of hops the client wrote itself, then the hop the proxy appended: the walk
    stops there (tests/unit/test_proxies.py counts what it reads)."""
    async with serve(tmp_path / "data", TILLBOX_SERVER_TRUSTED_PROXIES="127.0.0.1") as api:
        assert await junk_login(api, 0, forwarded_for("1," * 30_000 + CLIENT_A)) == 401
        assert await audit_sources(api, "auth.login_failed") == [CLIENT_A]


async def test_anonymous_idempotency_keys_are_scoped_to_the_forwarded_client(tmp_path: Path) -> None:
    key = {"Idempotency-Key": "signup-1"}
    async with serve(tmp_path / "data", TILLBOX_SERVER_TRUSTED_PROXIES="127.0.0.1") as api:
        first = {"email": "ann@example.com", "password": PASSWORD}
        second = {"email": "bob@example.com", "password": PASSWORD}
        status, _, _ = await api.call(
            "POST", "/api/v1/auth/register", json=first, headers=key | forwarded_for(CLIENT_A)
        )
        assert status == 201
        # Another client's same key is another key; the same client's is the same one.
        status, _, _ = await api.call(
            "POST", "/api/v1/auth/register", json=second, headers=key | forwarded_for(CLIENT_B)
        )
        assert status == 201
        status, body, _ = await api.call(
            "POST", "/api/v1/auth/register", json=second, headers=key | forwarded_for(CLIENT_A)
        )
        assert_error(status, body, 422, "idempotency_key_reused")
        assert await count_rows(api, "users") == 2


async def test_anonymous_idempotency_keys_ignore_forwarded_addresses_by_default(tmp_path: Path) -> None:
    key = {"Idempotency-Key": "signup-1"}
    async with serve(tmp_path / "data") as api:
        first = {"email": "ann@example.com", "password": PASSWORD}
        second = {"email": "bob@example.com", "password": PASSWORD}
        status, _, _ = await api.call(
            "POST", "/api/v1/auth/register", json=first, headers=key | forwarded_for(CLIENT_A)
        )
        assert status == 201
        status, body, _ = await api.call(
            "POST", "/api/v1/auth/register", json=second, headers=key | forwarded_for(CLIENT_B)
        )
        assert_error(status, body, 422, "idempotency_key_reused")
        assert await count_rows(api, "users") == 1


async def test_the_access_log_records_the_forwarded_client(tmp_path: Path) -> None:
    stream = io.BytesIO()
    access_log = AccessLog(stream)
    async with serve(tmp_path / "data", access_log=access_log, TILLBOX_SERVER_TRUSTED_PROXIES="127.0.0.1") as api:
        for headers in ({}, forwarded_for(CLIENT_A), forwarded_for("[2001:db8::5]:4711")):
            status, _, _ = await api.call("GET", "/healthz", headers=headers)
            assert status == 200
        access_log.flush()
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["path"], e["remote"]) for e in entries] == [
        ("/healthz", "127.0.0.1"),
        ("/healthz", CLIENT_A),
        ("/healthz", "2001:db8::5"),
    ]

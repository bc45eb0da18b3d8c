"""Emails, the password policy, roles and actors, refresh-token records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.domain.common_passwords import COMMON_PASSWORDS
from core.domain.errors import NotAllowed, ValidationFailed
from core.domain.users import (
    MAX_EMAIL_LENGTH,
    Actor,
    RefreshToken,
    Role,
    check_password_policy,
    normalize_email,
    normalize_password,
)


# Emails.
@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("alice@example.com", "alice@example.com"),
        ("Alice@Example.COM", "alice@example.com"),
        ("  bob.smith+shop@mail.example.org \n", "bob.smith+shop@mail.example.org"),
        ("ÉLODIE@exemple.fr", "élodie@exemple.fr"),
    ],
)
def test_normalize_email_lowercases_and_strips(raw: str, normalized: str) -> None:
    assert normalize_email(raw) == normalized


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "alice",
        "alice@",
        "@example.com",
        "alice@example",
        "alice@@example.com",
        "ali ce@example.com",
        "alice@exa mple.com",
        "alice@example.",
        "alice@example.com@evil.com",
        "alice@example.com\nbcc@evil.com",
    ],
)
def test_normalize_email_refuses_invalid_addresses(raw: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        normalize_email(raw)

    assert caught.value.code == "validation_failed"
    assert caught.value.details == {"fields": {"email": "is not a valid email address"}}


def test_email_length_limit() -> None:
    domain = "@example.com"
    longest = "a" * (MAX_EMAIL_LENGTH - len(domain)) + domain
    assert normalize_email(longest) == longest
    with pytest.raises(ValidationFailed) as caught:
        normalize_email("a" + longest)
    assert caught.value.details == {"fields": {"email": "is not a valid email address"}}


# Passwords.
def _weak(password: str, email: str | None = None) -> str:
    """The problem the policy finds with ``password``: one field, in the shape the schema uses."""
    with pytest.raises(ValidationFailed) as caught:
        check_password_policy(password, email=email)
    assert caught.value.code == "validation_failed"
    fields = caught.value.details["fields"]
    assert list(fields) == ["password"]
    assert caught.value.message == f"password {fields['password']}."
    return str(fields["password"])


def test_password_length_bounds_are_12_and_128_characters() -> None:
    check_password_policy("abcdefghijkx")  # 12
    check_password_policy("abcd" * 32)  # 128
    assert _weak("abcdefghijk") == "must have at least 12 characters"  # 11
    assert _weak("abcd" * 32 + "e") == "must have at most 128 characters"  # 129
    assert _weak("") == "must have at least 12 characters"


def test_password_length_counts_characters_not_bytes() -> None:
    # 12 characters but 24 bytes in UTF-8: long enough.
    check_password_policy("éèêëàâäôöûüç")
    # 11 characters but 33 bytes: too short.
    assert _weak("日本語のパスワードです。"[:11]) == "must have at least 12 characters"
    # 128 characters (256 bytes) is within the limit; 129 is not.
    check_password_policy("éèêë" * 32)
    assert _weak("éèêë" * 32 + "é") == "must have at most 128 characters"


@pytest.mark.parametrize("password", ["password1234", "PASSWORD1234", "Qwerty123456", "correcthorsebatterystaple"])
def test_common_passwords_are_refused_in_any_case(password: str) -> None:
    assert password.lower() in COMMON_PASSWORDS
    assert _weak(password) == "is too common or too easy to guess; choose another"


def test_every_common_password_of_policy_length_is_refused() -> None:
    for password in COMMON_PASSWORDS:
        if 12 <= len(password) <= 128:
            _weak(password)


@pytest.mark.parametrize("password", ["zzzzzzzzzzzz", "abababababab", "abcabcabcabc", "AaBbAaBbAaBb"])
def test_fewer_than_four_distinct_characters_is_refused(password: str) -> None:
    _weak(password)


def test_four_distinct_characters_are_enough() -> None:
    check_password_policy("abcdabcdabcd")


def test_password_equal_to_the_email_is_refused() -> None:
    assert _weak("Long.Name@Example.com", email="long.name@example.com") == "must not be the account's email address"
    assert _weak("long.name@example.com", email="Long.Name@Example.com") == "must not be the account's email address"
    check_password_policy("long.name@example.com", email="other.name@example.com")


def test_a_password_problem_names_the_field_of_the_request() -> None:
    with pytest.raises(ValidationFailed) as caught:
        check_password_policy("short", field="new_password")
    assert caught.value.details == {"fields": {"new_password": "must have at least 12 characters"}}
    with pytest.raises(ValidationFailed) as caught:
        normalize_password("bad \ud800 surrogate", field="new_password")
    assert caught.value.details == {"fields": {"new_password": "has characters that are not valid text"}}
    assert normalize_password("ｆｕｌｌｗｉｄｔｈ") == "fullwidth"


# Roles and actors.
def test_role_staff_flags() -> None:
    assert [r.is_staff for r in (Role.CUSTOMER, Role.STAFF, Role.ADMIN)] == [False, True, True]


def test_operator_is_an_admin_without_a_user() -> None:
    operator = Actor.operator()

    assert operator == Actor(user_id=None, role=Role.ADMIN, source_ip="cli", is_operator=True)
    assert operator.is_staff is True
    operator.require_admin()
    operator.require_staff()


@pytest.mark.parametrize(
    ("role", "staff_ok", "admin_ok"),
    [(Role.CUSTOMER, False, False), (Role.STAFF, True, False), (Role.ADMIN, True, True)],
)
def test_actor_requirements(role: Role, staff_ok: bool, admin_ok: bool) -> None:
    actor = Actor(user_id="usr_1", role=role)
    for check, ok in ((actor.require_staff, staff_ok), (actor.require_admin, admin_ok)):
        if ok:
            check()
        else:
            with pytest.raises(NotAllowed) as caught:
                check()
            assert caught.value.code == "forbidden"


# Refresh-token records.
def test_refresh_token_usability() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    token = RefreshToken(
        id="rtk_1", user_id="usr_1", family_id="fam_1", token_digest="d", created_at=now, expires_at=now + timedelta(1)
    )

    assert token.is_usable(now) is True
    assert token.is_usable(now + timedelta(days=1) - timedelta(microseconds=1)) is True
    assert token.is_usable(now + timedelta(days=1)) is False  # the expiry instant is already too late
    token.used_at = now
    assert token.is_usable(now) is False
    token.used_at = None
    token.revoked_at = now
    assert token.is_usable(now) is False

"""Secrets never reach the log: the patterns, what must survive them, and the handler's filter
over every part of a record."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
import sys
import threading
import time

import pytest

from entrypoints.logs import AccessLog
from entrypoints.redaction import REDACTED, redact
from tests.logcapture import captured_log

JWT = "eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0.eyJzdWIiOiJ1c3JfMDEifQ.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
REFRESH = "Yh3f-GmQ_o2pX8vR1kL9sT4uW6zA0bC5dE7fH2jK3mN"  # secrets.token_urlsafe(32)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Headers, to the end of their line. A bare CR does not end it, raw or as aiohttp
        # quotes it (bytes repr): what follows may be the rest of the token.
        (f"b'Authorization: Bearer {JWT}\\rX-Other: y'", "b'Authorization: [REDACTED]'"),
        (f"Authorization: Bearer {REFRESH[:9]}\r{REFRESH[9:]}\r\nHost: x", "Authorization: [REDACTED]\r\nHost: x"),
        (
            f"b'Authorization: Bearer {REFRESH[:9]}\\r{REFRESH[9:]}\\r\\nHost: x'",
            "b'Authorization: [REDACTED]\\r\\nHost: x'",
        ),
        (
            f"Missing expected LF after header value:\n\n    b'authorization: bearer {REFRESH[:9]}\\r{REFRESH[9:]}'\n  ^",
            "Missing expected LF after header value:\n\n    b'authorization: [REDACTED]'\n  ^",
        ),
        ("authorization: Basic dXNlcjpwYXNzd29yZA==", "authorization: [REDACTED]"),
        ("Proxy-Authorization: Basic dXNlcjpwYXNz\r\nHost: x", "Proxy-Authorization: [REDACTED]\r\nHost: x"),
        ("Cookie: session=abc; theme=dark\nnext", "Cookie: [REDACTED]\nnext"),
        ("Set-Cookie: sid=abc; HttpOnly", "Set-Cookie: [REDACTED]"),
        (
            "Stripe-Signature: t=1764600732,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd",
            "Stripe-Signature: [REDACTED]",
        ),
        ("{'Host': 'x', 'Authorization': 'Bearer abc.def'}", "{'Host': 'x', 'Authorization': '[REDACTED]'}"),
        ('{"X-Api-Key": "k-123"}', '{"X-Api-Key": "[REDACTED]"}'),
        # Bearer tokens and JWTs wherever they are.
        (f"sent bearer {REFRESH} twice", f"sent bearer {REDACTED} twice"),
        (f"token {JWT} expired", f"token {REDACTED} expired"),
        (f"cursor={JWT}", f"cursor={REDACTED}"),
        # Secret-named fields: JSON, Python repr, form, logfmt; any case; the name stays.
        ('{"email": "a@b.c", "password": "correct horse"}', '{"email": "a@b.c", "password": "[REDACTED]"}'),
        (
            '{"current_password":"x\\"y","new_password":"z"}',
            '{"current_password":"[REDACTED]","new_password":"[REDACTED]"}',
        ),
        (f'{{"refresh_token": "{REFRESH}"}}', '{"refresh_token": "[REDACTED]"}'),
        (f"refresh_token={REFRESH}&x=1", f"refresh_token={REDACTED}&x=1"),
        (
            "LogIn(email='a@b.c', password='hunter2hunter2', source_ip=None)",
            "LogIn(email='a@b.c', password='[REDACTED]', source_ip=None)",
        ),
        ("{'PASSWORD': b'hunter2'}", "{'PASSWORD': b'[REDACTED]'}"),
        (
            '{"Access_Token": "a", "clientSecret": "b", "SECRET": "c", "Token": 12345, "API_KEY": "d"}',
            '{"Access_Token": "[REDACTED]", "clientSecret": "[REDACTED]", "SECRET": "[REDACTED]", '
            '"Token": [REDACTED], "API_KEY": "[REDACTED]"}',
        ),
        (
            '{"apiKey": "a", "secret_key": "b", "webhook_secret": "c"}',
            '{"apiKey": "[REDACTED]", "secret_key": "[REDACTED]", "webhook_secret": "[REDACTED]"}',
        ),
        ('{\\"password\\": \\"in JSON in JSON\\"}', '{\\"password\\": \\"[REDACTED]\\"}'),
        (
            '{"password_confirmation": "a", "passwordAgain": "b", "passwd": "c"}',
            '{"password_confirmation": "[REDACTED]", "passwordAgain": "[REDACTED]", "passwd": "[REDACTED]"}',
        ),
        ('cut short: {"password": "abc', 'cut short: {"password": "[REDACTED]"'),
        ("password: hunter2hunter2", "password: [REDACTED]"),
        # Unquoted after a colon: the whole value, spaces and all, to the end of the line or a delimiter.
        ("password: correct battery horse staple", "password: [REDACTED]"),
        (
            '{"note": "new password: correct battery horse staple", "n": 1}',
            '{"note": "new password: [REDACTED]", "n": 1}',
        ),
        ('{"password": "abc\rdef", "n": 1}', '{"password": "[REDACTED]", "n": 1}'),  # a bare CR inside quotes
        # Percent-encoded, as in a query string or a form inside one.
        ("next=%2Flogin%3Fpassword%3Dhunter2%26x%3D1", "next=%2Flogin%3Fpassword%3D[REDACTED]%26x%3D1"),
        ("body=%7B%22password%22%3A%22hunter%20two%22%7D", "body=%7B%22password%22%3A%22[REDACTED]%22%7D"),
        ("%22Refresh_Token%22%3A%22abc%22%2C%22n%22%3A1", "%22Refresh_Token%22%3A%22[REDACTED]%22%2C%22n%22%3A1"),
        # Stripe's secrets and Tillbox's personal API keys keep what says what they were.
        ("api_key=sk_live_51HqLyjWDarjtT1zdp7dc", "api_key=[REDACTED]"),
        ("using sk_live_51HqLyjWDarjtT1zdp7dc and sk_test_tillbox", "using sk_live_[REDACTED] and sk_test_[REDACTED]"),
        ("rk_live_abc rk_test_def ek_test_ghi", "rk_live_[REDACTED] rk_test_[REDACTED] ek_test_[REDACTED]"),
        ("verify with whsec_tillbox_tests", "verify with whsec_[REDACTED]"),
        ("pi_3AbC12_secret_XyZ789 for the customer", "pi_3AbC12_secret_[REDACTED] for the customer"),
        ("seti_1Mm8s8_secret_NgPb2x", "seti_1Mm8s8_secret_[REDACTED]"),
        # Glued to what came before, as in a URL-encoded header: still found.
        (f"Bearer%20{JWT}", f"Bearer%20{REDACTED}"),
        ("key%3Dsk_live_abc%26", "key%3Dsk_live_[REDACTED]%26"),
        ("key tbk_3fa9c_Xz-Q81 was used", f"key tbk_{REDACTED} was used"),
        # Card numbers that pass Luhn, bare or grouped; CVCs in card fields.
        ("card 4242424242424242 declined", "card [REDACTED] declined"),
        ("4242 4242 4242 4242", REDACTED),
        ("4000-0566-5566-5556", REDACTED),
        ("amex 378282246310005, 3782 822463 10005", "amex [REDACTED], [REDACTED]"),
        ("6011111111111117 5555555555554444 3056930009020004", "[REDACTED] [REDACTED] [REDACTED]"),
        ("4222222222222 (13 digits)", "[REDACTED] (13 digits)"),
        ("4000 0025 0000 3155 002", REDACTED),  # 19 digits, 4-4-4-4-3
        ("4242 4242-4242 4242", REDACTED),  # separators mixed
        ("4000-0566 5566-5556, 3782-822463 10005", f"{REDACTED}, {REDACTED}"),
        (
            "card[number]=4242424242424242&card[cvc]=123&card[exp_month]=12",
            "card[number]=[REDACTED]&card[cvc]=[REDACTED]&card[exp_month]=12",
        ),
        (
            '{"cvc": "123", "CVV": 9876, "cvc2": "321", "card_csc": "111"}',
            '{"cvc": "[REDACTED]", "CVV": [REDACTED], "cvc2": "[REDACTED]", "card_csc": "[REDACTED]"}',
        ),
        ("uatp 135412345678911", "uatp [REDACTED]"),  # the one card number that starts with 1
    ],
)
def test_secrets_are_redacted(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "listening url=http://127.0.0.1:8080 pid=4242",
        "order ord_01JD3QH5VZ6Y8K2N4P7R9T0W1X paid: total 125000 USD, 3 lines",
        "prd_01J0000000000000000000000 and pay_4242424242424242424242",  # ids, whatever their digits
        "2026-12-01T14:52:12.132115Z 2026-12-01 14:52:12 +0000",
        "epoch 1764600732, milliseconds 1764600732132, microseconds 1764600732132044",
        "nanoseconds 1764600732132044123",
        "4242424242424241 fails Luhn; 12345678901234567890123 is too long",
        "uuid 550e8400-e29b-41d4-a716-446655440000",
        "request 8a1f0c3e5b7d000000002a",
        "3.14159265358979323 and 4242424242424242.5",
        '{"token_type": "Bearer", "expires_in": 900, "idempotency_key": "k-1", "tokens": 3}',
        "the token expired; sign in again",
        "use Bearer <access token>",  # a placeholder is not a token
        "pk_test_TYooMQauvdEDq54NiTphI7jx pi_3AbC12 seti_1Mm8s8 pm_card_visa cus_N1",
        "message='Stripe API response' path=http://127.0.0.1:8420/v1/payment_intents/pi_3Ab/confirm response_code=200",
        "Ünïcödé İstanbul ß naïve café",
        "",
    ],
)
def test_ordinary_text_survives(text: str) -> None:
    assert redact(text) == text


def test_non_ascii_text_is_still_redacted() -> None:
    # "İ" lowercases to two characters; the positions found must still be the original's.
    assert redact('İstanbul {"password": "şifre"} İ') == 'İstanbul {"password": "[REDACTED]"} İ'


def _lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


def test_every_part_of_a_record_is_redacted_for_every_logger() -> None:
    card = "4242 4242 4242 4242"
    with captured_log("debug") as log:
        logging.getLogger("aiohttp.server").error("bad line %r", f"Authorization: Bearer {JWT}\r")
        logging.getLogger("stripe").debug("message='API response body' body='%s'", '{"client_secret": "pi_1_secret_2"}')
        logging.getLogger("asyncio").warning("args as a mapping: %(card)s", {"card": card})
        logging.getLogger("tillbox.http").info(
            "extra fields",
            extra={
                "fields": {"password": "hunter2hunter2", "note": f"key sk_live_{'x' * 24}", "nested": {"token": 1}},
                "refresh_token": REFRESH,
            },
        )
        logging.getLogger("tillbox").info("where from: refresh_token=%s", REFRESH, stack_info=True)
    out = log.text()
    for secret in (JWT, "pi_1_secret_2", card, "hunter2hunter2", "x" * 24, REFRESH):
        assert secret in log.raw.getvalue()  # each was there to leak
        assert secret not in out
    entries = _lines(out)
    assert [e["logger"] for e in entries] == ["aiohttp.server", "stripe", "asyncio", "tillbox.http", "tillbox"]
    assert entries[0]["message"] == "bad line 'Authorization: [REDACTED]'"
    assert entries[1]["message"] == """message='API response body' body='{"client_secret": "[REDACTED]"}'"""
    assert entries[2]["message"] == "args as a mapping: [REDACTED]"
    assert entries[3]["password"] == REDACTED
    assert entries[3]["note"] == "key sk_live_[REDACTED]"
    assert entries[3]["nested"] == {"token": REDACTED}
    assert "test_every_part_of_a_record_is_redacted_for_every_logger" in str(entries[4]["stack"])


def test_an_exception_is_redacted_in_its_message_cause_notes_and_traceback() -> None:
    password = "correct horse battery staple"
    with captured_log("info") as log:
        try:
            try:
                raise ValueError(f'provider said {{"password": "{password}"}}')
            except ValueError as cause:
                error = RuntimeError(f"call failed: Authorization: Bearer {JWT}")
                error.add_note(f"client_secret=pi_9_secret_{REFRESH}")
                raise error from cause
        except RuntimeError:
            logging.getLogger("tillbox.http").exception("unhandled error")
    (entry,) = _lines(log.text())
    traceback = str(entry["traceback"])
    assert "Traceback (most recent call last)" in traceback
    assert "The above exception was the direct cause" in traceback
    assert 'ValueError: provider said {"password": "[REDACTED]"}' in traceback
    assert "RuntimeError: call failed: Authorization: [REDACTED]" in traceback
    assert "client_secret=[REDACTED]" in traceback
    for secret in (password, JWT, REFRESH):
        assert secret in log.raw.getvalue()
        assert secret not in log.text()


def test_a_message_whose_arguments_do_not_fit_is_still_redacted() -> None:
    with captured_log("info") as log:
        logging.getLogger("stripe").info("two %s %s", f"password={REFRESH}")
    assert REFRESH not in log.text()
    assert "password=[REDACTED]" in log.text()


def test_an_exception_no_one_caught_in_a_thread_is_logged_redacted() -> None:
    def fail() -> None:
        raise RuntimeError(f"refresh_token={REFRESH}")

    with captured_log("info") as log:
        thread = threading.Thread(target=fail, name="worker-1")
        thread.start()
        thread.join()
    (entry,) = _lines(log.text())
    assert (entry["message"], entry["thread"], entry["level"]) == (
        "uncaught exception in a thread",
        "worker-1",
        "error",
    )
    assert "RuntimeError: refresh_token=[REDACTED]" in str(entry["traceback"])
    assert REFRESH not in log.text()


def test_an_exception_no_one_caught_in_the_main_thread_is_logged_redacted() -> None:
    with captured_log("info") as log:
        try:
            raise KeyError(f"Bearer {REFRESH}")
        except KeyError:
            sys.excepthook(*sys.exc_info())  # what Python does with an exception that ends the program
    (entry,) = _lines(log.text())
    assert (entry["message"], entry["level"]) == ("uncaught exception", "critical")
    assert "KeyError: 'Bearer [REDACTED]'" in str(entry["traceback"])


async def test_a_task_exception_asyncio_reports_is_redacted() -> None:
    async def fail() -> None:
        raise RuntimeError(f'{{"access_token": "{JWT}"}}')

    with captured_log("info") as log:
        loop = asyncio.get_running_loop()
        task = loop.create_task(fail())
        await asyncio.wait([task])
        loop.call_exception_handler({"message": "Task exception was never retrieved", "exception": task.exception()})
    (entry,) = _lines(log.text())
    assert entry["logger"] == "asyncio"
    assert '"access_token": "[REDACTED]"' in str(entry["traceback"])
    assert JWT not in log.text()


async def test_the_access_log_redacts_what_a_client_put_in_the_path_request_id_or_method() -> None:
    stream = io.BytesIO()
    access = AccessLog(stream)
    own_id = "8a1f0c3e5b7d000000002a"
    access.write(1.0, own_id, "127.0.0.1", "GET", "/api/v1/orders/ord_01JD3QH5VZ6Y8K2N4P7R9T0W1X", 200, 1.0)
    access.write(2.0, f"req.{JWT}", "127.0.0.1", "GET", f"/api/v1/users/{JWT}", 404, 1.0)
    access.write(3.0, own_id, "127.0.0.1", "GET", "/api/v1/products/4242424242424242", 404, 1.0)
    access.write(4.0, own_id, "127.0.0.1", "PUT", "/api/v1/products/sk_live_abcdef/tbk_abc", 404, 1.0)
    access.write(5.0, own_id, "127.0.0.1", f"X{JWT}", "/", 405, 1.0)
    access.flush()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["request_id"], e["method"], e["path"]) for e in lines] == [
        (own_id, "GET", "/api/v1/orders/ord_01JD3QH5VZ6Y8K2N4P7R9T0W1X"),
        ("req.[REDACTED]", "GET", "/api/v1/users/[REDACTED]"),
        (own_id, "GET", "/api/v1/products/[REDACTED]"),
        (own_id, "PUT", "/api/v1/products/sk_live_[REDACTED]/tbk_[REDACTED]"),
        (own_id, "X[REDACTED]", "/"),
    ]


# Inputs that make a backtracking pattern read the same text again and again, for each
# alternative of the patterns: (what opens the text, the unit repeated to fill it). A long
# word holding many starts of one name ("passwdpasswd…" took 4.8 s for 24 KB, and 31 s for
# 64 KiB, on the event loop), one start followed by a long run of what its pattern reads,
# values that never close, separators, escapes and bare CRs, cards and timestamps.
ADVERSARIAL = {
    "password-word": ("", "passwd"),
    "password-name-word": ("", "password_"),
    "password-spaces": ("password", " "),
    "password-no-separator": ("", "password "),
    "password-eq": ("", "password="),
    "password-colon": ("password:", "a b"),
    "quoted-never-closed": ('password: "', "\\a"),
    "quoted-escapes": ("", 'password: "\\"'),
    "quoted-bare-crs": ("password='", "a\r"),
    "json-in-json-backslashes": ('password=\\"', "\\"),
    "json-in-json-words": ("", '\\"password\\": \\"\\\\'),
    "bare-backslashes": ("password=", "\\"),
    "encoded": ("", "%22password%22%3a%22%"),
    "encoded-run": ("password%3d%22", "%2"),
    "token": ("", "token"),
    "secret-close": ("", "secret\\"),
    "header-names": ("", "authorization"),
    "header-backslashes": ("authorization", "\\"),
    "header-bare-crs": ("authorization: ", "a\r"),
    "header-repr-crs": ("authorization: ", "a\\r"),
    "bearer": ("", "bearer "),
    "bearer-spaces": ("bearer", " "),
    "jwt-word": ("", "eyj"),
    "jwt-one-dot": ("", "eyja."),
    "jwt-long-segment": ("eyj", "a"),
    "jwt-two-segments": ("eyja.", "a"),
    "stripe-prefixes": ("", "pi_"),
    "stripe-run": ("pi_", "a"),
    "stripe-secret-words": ("", "seti_x"),
    "stripe-keys": ("", "sk_live"),
    "tbk": ("", "tbk_"),
    "digits": ("", "4"),
    "ones": ("", "1"),
    "card-groups": ("", "4242 "),
    "card-mixed-groups": ("", "4242-4242 "),
    "every-start": ("", "passwdeyjtokensk_pi_bearer authorization"),
    "non-ascii": ("", "İpasswd"),
}


def _cpu(text: str, times: int) -> float:
    """The least CPU time of five runs of ``times`` redactions of ``text`` (the least: what
    another process or a cache miss adds only ever makes a run longer)."""
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for _ in range(times):
            redact(text)
        best = min(best, time.process_time() - started)
    return best


@pytest.mark.parametrize(("opening", "unit"), ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
def test_redacting_costs_time_linear_in_the_length_whatever_the_text(opening: str, unit: str) -> None:
    """Four times the text costs about four times the work (a quadratic pattern: sixteen).
    Both are measured here, in the same run, on the same text repeated: CPU time of this
    process, equal amounts of text on each side, so the machine's speed and load cancel out."""
    small = opening + unit * (16 * 1024 // len(unit))
    large = opening + unit * (64 * 1024 // len(unit))
    # Enough repetitions that each side takes milliseconds, not the clock's resolution.
    started = time.process_time()
    redact(small)
    times = max(1, math.ceil(0.01 / max(time.process_time() - started, 1e-6)))
    assert _cpu(large, times) < 2 * _cpu(small, 4 * times), "64 KiB cost over 8 times what 16 KiB did"


async def test_the_access_log_redacts_a_long_hostile_path_whole() -> None:
    """The path a client sends is redacted in the access log's flush, on the event loop: a
    64 KiB one of the worst kind, with a secret at its end, comes out redacted and short of
    nothing else."""
    stream = io.BytesIO()
    access = AccessLog(stream)
    path = "/" + "passwd" * 10_000 + f"/password={REFRESH}"
    access.write(1.0, "8a1f0c3e5b7d000000002a", "127.0.0.1", "GET", path, 404, 1.0)
    access.flush()
    (line,) = stream.getvalue().splitlines()
    assert json.loads(line)["path"] == "/" + "passwd" * 10_000 + "/password=[REDACTED]"

"""Secrets out of log lines: tokens, passwords, client secrets, keys and card data.

Tillbox's own code never logs a secret, but other code does: aiohttp quotes a malformed
header line whole (``Authorization`` included), stripe-python logs request and response
bodies at debug level (``client_secret``), and an exception's text is whatever its raiser
put there. So every record is redacted at the one handler that writes the log (see
``entrypoints.logs``), whichever logger made it and whichever part of it holds the secret.

What is recognised, in any text:

- the values of ``Authorization``, ``Proxy-Authorization``, ``Cookie``, ``Set-Cookie``,
  ``Stripe-Signature``, ``Tillbox-Signature`` and ``X-Api-Key`` headers, to the end of the line
  (a bare CR, as a client may slip into a token, does not end it);
- ``Bearer <token>``, and JWTs (three base64url segments, the first starting ``eyJ``);
- the value of a field (JSON, Python repr, form or logfmt) whose name ends in ``secret``,
  ``token``, ``api_key``, ``secret_key``, ``private_key``, ``signature``, ``cvc``, ``cvv`` or
  ``csc``, or has ``password`` in it, in any case (``current_password``, ``refresh_token``,
  ``client_secret``, ``card[cvc]``, ``apiKey``, ``password_confirmation``...);
  ``token_type`` or ``idempotency_key`` are not secrets. A quoted value goes to its closing
  quote; an unquoted one after ``=`` to the next space or delimiter, after ``:`` to the end of
  the value (``password: correct battery horse staple``); percent-encoded forms too
  (``password%3D…``, ``%22password%22%3A%22…%22``);
- Stripe secret, restricted and ephemeral keys (``sk_live_``, ``rk_test_``, ``ek_...``),
  webhook secrets (``whsec_``), PaymentIntent and SetupIntent client secrets
  (``pi_..._secret_...``, ``seti_..._secret_...``), and Tillbox personal API keys (``tbk_``);
- card numbers: 13 to 19 digits, bare or in groups separated by spaces or dashes (mixed), that
  pass the Luhn check. A bare run that starts with 1 is taken for a timestamp (epoch
  milliseconds are 13 such digits) unless it has 15 digits, the one card length (UATP)
  whose numbers start with 1.

Its cost is linear in the length of the text, whatever the text (see the patterns' comment).

A redacted value keeps what says what it was (``sk_test_[REDACTED]``,
``pi_3Abc_secret_[REDACTED]``, ``"password": "[REDACTED]"``) and loses the rest.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Any

REDACTED = "[REDACTED]"

# Matched against the text lowercased, so case-insensitive. _SECRETS is tried only where
# _STARTS finds a word a secret can begin with: a plain alternation of literals, which the
# regex engine scans for fast, where the full pattern (tried at every position) cost about
# a microsecond per character.
#
# What a log line holds is the client's to choose, and the redaction runs on the event
# loop, so its cost must be linear in the length of the text, whatever the text. Hence:
# every quantifier is possessive (``*+``, ``++``: what it took is never given back, so a
# failed try costs what it read, once); every value pattern succeeds once it has begun (a
# quoted value without its closing quote runs to the end of the line), so what a value
# reads is consumed and never read again; and a failed try at a name that runs on to the
# end of its word (``passw…``, ``eyj…``) skips the later starts of the same kind in that
# word, which would read the same word and fail on the same text after it (see redact()).
_HEADERS = r"proxy-authorization|authorization|set-cookie|cookie|stripe-signature|tillbox-signature|x-api-key"
_FIELDS = r"passw(?:or)?d[a-z0-9_-]*+|secret(?:[_-]?key)?|token|api[_-]?key|private[_-]?key|signature|cvc2?|cvv2?|csc"
_STARTS = re.compile(
    rf"{_HEADERS}|passw|secret|token|api_key|api-key|apikey|private|signature|cvc|cvv|csc"
    r"|bearer|eyj|sk_|rk_|ek_|whsec_|pi_|seti_|tbk_"
)
# Starts whose pattern reads to the end of the word they begin: a name with "passw" in it,
# a JWT's first segment. Where such a try failed, the same kind's later starts in the word fail.
_WORD_LONG = re.compile(r"passw(?:or)?d[a-z0-9_-]*+|eyj[a-z0-9_-]++")
# A name's closing quote (escaped, in JSON within JSON; or percent-encoded), or card[cvc]'s bracket.
_CLOSE = r"(?:\\*+[\"']|%22|\])?+"
# The rest of a header's line, to its end or to the end of the quoted string it is in. A
# bare CR (raw, or as a repr shows it: \r) does not end it: a client may put one in a token,
# and what follows would be the token's tail.
_LINE = r"(?:[^\r\n\"'\\]++|\r(?!\n)|\\(?![\\\"'n]|r\\n))++"
# A quoted value, to its closing quote or the end of the line: JSON or repr strings, and
# JSON within a JSON string (\"...\").
_QUOTED = (
    r"b?\"(?:[^\"\\\r\n]++|\\.|\r(?!\n))*+\"?"
    r"|b?'(?:[^'\\\r\n]++|\\.|\r(?!\n))*+'?"
    r"|\\++\"(?:[^\"\\\r\n]++|\\++(?!\"))*+(?:\\++\")?+"
)
# Unquoted after "=" (a form, logfmt, a repr's keyword): to the next space or delimiter.
_BARE = r"(?:\\++[\"'])?+[^\s&,;\"'\\<>{}\[\]()]++"
# Unquoted after ":" (``password: correct battery horse staple``, a JSON number): to the end
# of the value, spaces included.
_COLON_BARE = r"(?:\\++[\"'])?+[^\r\n&,;\"'\\<>{}\[\]()]++"
# After an encoded separator (``password%3D…``, ``%22password%22%3A%22…%22``): to an encoded
# quote or ampersand, or a delimiter; it may be empty.
_ENCODED = r"(?:%22)?+(?:[^\s&\"'\\<>{}\[\]()%]++|%(?!22|26))*+(?:%22)?+"

_SECRETS = re.compile(
    "|".join(
        (
            # A header and its value, to the end of the line or of the quoted string.
            rf"(?P<header>(?:{_HEADERS}){_CLOSE}\s*+[:=]\s*+(?:\\*+[\"'])?+){_LINE}",
            # A field named like a secret (current_password, refresh_token, card[cvc]...):
            # the name stays, the value goes, quoted or bare.
            rf"(?P<field>(?:{_FIELDS}){_CLOSE}\s*+(?:(?P<colon>:)|=|(?P<encoded>%3a|%3d))\s*+)"
            rf"(?(encoded){_ENCODED}|(?:{_QUOTED}|(?(colon){_COLON_BARE}|{_BARE})))",
            r"(?P<bearer>bearer\s++)[a-z0-9\-._~+/]++=*+",
            r"(?P<jwt>eyj[a-z0-9_-]++\.[a-z0-9_-]++\.[a-z0-9_-]*+)",
            r"(?P<stripe>(?:sk|rk|ek)_(?:live|test)_|whsec_|pi_[a-z0-9]++_secret_|seti_[a-z0-9]++_secret_)[a-z0-9_]++",
            r"(?P<tbk>tbk_)[a-z0-9_-]++",
        )
    ),
    re.MULTILINE,
)
# Card numbers, bare or grouped as cards are printed (4-4-4-4[-3], 4-6-5), spaces and dashes
# alike; checked by Luhn. Each try reads at most 23 characters.
_CARDS = re.compile(
    r"[0-9](?:[0-9]{12,18}+"
    r"|[0-9]{3}[ -][0-9]{4}[ -][0-9]{4}[ -][0-9]{1,4}+(?:[ -][0-9]{1,3}+)?"
    r"|[0-9]{3}[ -][0-9]{6}[ -][0-9]{4,5}+)(?![\w-]|\.[0-9])"
)
# How a quoted value opens (b'...', \"...\", %22...%22), to close it alike.
_OPENING = re.compile(r"(b?)(\\*)([\"']|%22)?")
_ASCII_LOWER = {c: c + 32 for c in range(65, 91)}


def _luhn(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        n = ord(char) - 48
        if position % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _secret(match: re.Match[str], text: str) -> str:
    """What replaces ``match`` (found in ``text`` lowercased)."""
    start = match.start()
    for prefix in ("header", "bearer", "field"):
        end = match.end(prefix)
        if end < 0:
            continue
        if prefix != "field":
            return text[start:end] + REDACTED
        opening = _OPENING.match(text, end)
        assert opening is not None  # it matches the empty string
        as_bytes, slashes, quote = opening.groups()
        if not quote:
            return text[start:end] + REDACTED
        return f"{text[start:end]}{as_bytes}{slashes}{quote}{REDACTED}{slashes}{quote}"
    kept = match.end("stripe") if match.end("stripe") >= 0 else match.end("tbk")
    return text[start:kept] + REDACTED if kept >= 0 else REDACTED


def _card(match: re.Match[str]) -> str:
    text = match.group(0)
    start = match.start()
    if start > 0 and (match.string[start - 1].isalnum() or match.string[start - 1] in "_.-"):
        return text  # part of an id, a decimal or a longer number
    digits = text.replace(" ", "").replace("-", "")
    if digits == text and digits[0] == "1" and len(digits) != 15:
        return text  # a timestamp, not a card
    return REDACTED if _luhn(digits) else text


def redact(text: str) -> str:
    """``text`` with every secret it holds replaced by ``[REDACTED]``, in time linear in its
    length (a client chooses much of what is logged)."""
    lowered = text.lower()
    start = _STARTS.search(lowered)
    if start is not None:
        if len(lowered) != len(text):  # a few non-ASCII letters lengthen when lowered
            lowered = text.translate(_ASCII_LOWER)
            start = _STARTS.search(lowered)
        parts: list[str] = []
        done = 0
        # Where a try at a name that reads to the end of its word failed: the later starts of
        # the same kind ("passw", "eyj") before that end fail alike, and are skipped, so that
        # no word is read once per start in it ("passwdpasswd…" was quadratic).
        failed_until = {"passw": -1, "eyj": -1}
        while start is not None:
            at = start.start()
            kind = start.group()
            if failed_until.get(kind, -1) > at:
                start = _STARTS.search(lowered, at + 1)
                continue
            match = _SECRETS.match(lowered, at)
            if match is None:
                if kind in failed_until:
                    word = _WORD_LONG.match(lowered, at)
                    if word is not None:
                        failed_until[kind] = word.end()
                start = _STARTS.search(lowered, at + 1)
                continue
            parts += (text[done : match.start()], _secret(match, text))
            done = match.end()
            start = _STARTS.search(lowered, done)
        if parts:
            parts.append(text[done:])
            text = "".join(parts)
    return _CARDS.sub(_card, text) if _CARDS.search(text) else text


def redact_value(value: Any, name: str = "") -> Any:
    """A structured value (a log record's extra fields) redacted: a secret-named key loses its
    value whatever it is; strings are redacted as text; containers are walked."""
    if name and _secret_name(name):
        return REDACTED
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_value(item, str(key)) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(item) for item in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(str(value))


_SECRET_NAME = re.compile(rf"(?:{_HEADERS}|{_FIELDS})\Z")


@functools.lru_cache(maxsize=1024)  # the same few field names, over and over
def _secret_name(name: str) -> bool:
    return _SECRET_NAME.search(name.lower()) is not None


# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class RedactingFilter(logging.Filter):
    """Redacts a record in place before any formatter sees it: the message with its arguments,
    every extra field, the exception's text and traceback, and the stack. The exception
    itself is dropped from the record once rendered, so no formatter can render it again
    unredacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit the format: keep both, redacted
            message = f"{record.msg} {record.args!r}"
        record.msg = redact(message)
        record.args = None
        for name in record.__dict__.keys() - _STANDARD:
            record.__dict__[name] = redact_value(record.__dict__[name], name)
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = _FORMATTER.formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_FORMATTER = logging.Formatter()

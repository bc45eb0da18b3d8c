"""Page cursors of the repositories: opaque to clients, made and read only here.

A cursor is base64url (unpadded) of the JSON array ``[binding, *key]``. The key is the sort
key of the last item of a page (its sort value, if the sort has one, then its id), which is
what the next page continues after. The binding is a short digest of the list, its sort and
its filters, so that a cursor continues only the list it came from. Anything else given as
a cursor (a stranger's string, an edited cursor, one of another list, sort or filter) is
InvalidCursor: a garbage cursor is never silently a first page.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from typing import Any

import orjson

from core.domain.errors import InvalidCursor

#: 64-bit integers, as both stores keep them: a key outside them (an edited cursor) could never be bound.
_INTEGERS = range(-(2**63), 2**63)


def binding(*parts: str | int | bool | None) -> str:
    """What a cursor is bound to: the list's name, then its sort and filters."""
    return base64.urlsafe_b64encode(hashlib.blake2b(orjson.dumps(parts), digest_size=9).digest()).decode()


def encode(bound_to: str, key: Sequence[str | int]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([bound_to, *key])).rstrip(b"=").decode()


def decode(cursor: str, bound_to: str, types: Sequence[type]) -> list[Any]:
    """The key in ``cursor``, which must be bound to ``bound_to`` and hold values of exactly
    ``types`` (bool is not int); InvalidCursor otherwise."""
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        value = orjson.loads(raw)
    except ValueError:  # not base64 (binascii.Error), not ASCII, not JSON (orjson's error)
        raise InvalidCursor() from None
    if (
        not isinstance(value, list)
        or len(value) != 1 + len(types)
        or value[0] != bound_to
        or any(type(part) is not kind for part, kind in zip(value[1:], types, strict=True))
        or any(type(part) is int and part not in _INTEGERS for part in value[1:])
    ):
        raise InvalidCursor()
    return value[1:]

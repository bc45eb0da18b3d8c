"""Ids that sort in creation order as text: ``prefix_`` + a ULID (https://github.com/ulid/spec)."""

from __future__ import annotations

import secrets
import threading
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # in ASCII order, so text order is number order
_RANDOM_BITS = 80
_MAX = (1 << 128) - 1


class UlidIds:
    """48-bit millisecond timestamp + 80 random bits, in 26 Crockford base32 characters.

    Within one process the ids are strictly increasing: in the same millisecond (or if the
    wall clock steps back) the previous value is incremented instead of drawing new random bits.
    """

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def new(self, prefix: str) -> str:
        with self._lock:
            value = (time.time_ns() // 1_000_000) << _RANDOM_BITS | secrets.randbits(_RANDOM_BITS)
            if value >> _RANDOM_BITS <= self._last >> _RANDOM_BITS:
                value = self._last + 1
                if value > _MAX:
                    raise OverflowError("ULID space exhausted")
            self._last = value
        return prefix + "_" + "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))

"""Time and identity generation, injected so that tests can pin them."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""


class IdGenerator(Protocol):
    def new(self, prefix: str) -> str:
        """A new unique id such as ``prd_01JD...``: the prefix names the kind of object, the
        rest is ASCII, and ids made later sort (as bytes, which every store can compare)
        after ids made earlier, to the precision of the clocks of the machines that made
        them. Lists ordered by id are in creation order to that precision."""

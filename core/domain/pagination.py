"""Keyset pagination: a page is "the next `limit` items after this key", never an OFFSET."""

from __future__ import annotations

from typing import Generic, TypeVar

import attrs

from core.domain.errors import ValidationFailed

T = TypeVar("T")

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


@attrs.frozen
class PageRequest:
    limit: int = DEFAULT_LIMIT
    after: str | None = None  # the sort key of the last item of the previous page

    def __attrs_post_init__(self) -> None:
        if type(self.limit) is not int or not 1 <= self.limit <= MAX_LIMIT:
            raise ValidationFailed({"limit": f"must be an integer from 1 to {MAX_LIMIT}"})


@attrs.frozen
class Page(Generic[T]):
    items: list[T]
    next_after: str | None  # None on the last page

    @property
    def has_more(self) -> bool:
        return self.next_after is not None

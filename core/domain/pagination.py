"""Keyset pagination: a page is "the next `limit` items after this one", never an OFFSET.

Where a page ends is a cursor: an opaque string that the store made (``Page.next_after``)
and that comes back unchanged (``PageRequest.after``) for the next page. Its form is the
store's business; callers never build, parse or compare one. A cursor continues only the
list it came from (the same list, sort and filters): anything else is InvalidCursor."""

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
    after: str | None = None  # None: the first page; else a previous page's next_after, as it was

    def __attrs_post_init__(self) -> None:
        if type(self.limit) is not int or not 1 <= self.limit <= MAX_LIMIT:
            raise ValidationFailed({"limit": f"must be an integer from 1 to {MAX_LIMIT}"})


@attrs.frozen
class Page(Generic[T]):
    items: list[T]
    next_after: str | None  # the cursor of the next page; None on the last page

    @property
    def has_more(self) -> bool:
        return self.next_after is not None

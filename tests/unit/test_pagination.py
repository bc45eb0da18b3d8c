"""Page requests: a limit of 1 to 100, an optional key to continue after."""

from __future__ import annotations

import pytest

from core.domain.errors import ValidationFailed
from core.domain.pagination import DEFAULT_LIMIT, MAX_LIMIT, Page, PageRequest


def test_defaults() -> None:
    assert PageRequest() == PageRequest(limit=DEFAULT_LIMIT, after=None)
    assert (DEFAULT_LIMIT, MAX_LIMIT) == (20, 100)


@pytest.mark.parametrize("limit", [1, 50, 100])
def test_limits_in_range(limit: int) -> None:
    assert PageRequest(limit=limit).limit == limit


@pytest.mark.parametrize("limit", [0, -1, 101, True, False, 10.0, "10", None])
def test_limits_out_of_range_or_not_integers(limit: object) -> None:
    with pytest.raises(ValidationFailed) as caught:
        PageRequest(limit=limit)  # type: ignore[arg-type]

    assert caught.value.code == "validation_failed"
    assert caught.value.details == {"fields": {"limit": "must be an integer from 1 to 100"}}


def test_has_more_follows_next_after() -> None:
    assert Page(items=[1, 2], next_after="2").has_more is True
    assert Page(items=[1, 2], next_after=None).has_more is False

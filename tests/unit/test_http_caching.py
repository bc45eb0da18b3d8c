"""If-None-Match against an entity tag: weak comparison, lists, ``*`` (RFC 9110 13.1.2)."""

from __future__ import annotations

import pytest

from entrypoints.http.caching import none_match
from entrypoints.http.representations import RenderedPages


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        ('"abc"', True),
        ('W/"abc"', True),  # weak comparison, as for GET and HEAD
        ('"x", "abc"', True),
        ('"x",W/"abc" , "y"', True),
        ("*", True),
        (" * ", True),
        ('"abcd"', False),
        ('"ab"', False),
        ('"x", "y"', False),
        ("abc", False),  # not a tag: no match, the full answer
        ("", False),
        (None, False),
    ],
)
def test_if_none_match(header: str | None, matches: bool) -> None:
    assert none_match(header, '"abc"') is matches


def test_a_weak_tag_of_ours_is_compared_weakly_too() -> None:
    assert none_match('"abc"', 'W/"abc"') is True


def test_a_rendered_page_has_one_tag_from_its_bytes() -> None:
    pages = RenderedPages()
    first = pages.put("key", 1, b'{"data":[]}')
    assert first.etag == first.etag and first.etag.startswith('"') and len(first.etag) == 34
    again = pages.put("key", 2, b'{"data":[]}')  # rebuilt after an unrelated commit
    assert again.etag == first.etag
    other = pages.put("key", 3, b'{"data":[1]}')
    assert other.etag != first.etag
    assert pages.lookup("key", 3) is other and pages.lookup("key", 2) is None
    assert pages.get("key", 3) == b'{"data":[1]}'

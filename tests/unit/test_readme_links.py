"""The README stands on its own: every link in it leads to a file of the repository, a
heading of the README, or the local server; nothing points outside the clone."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
LOCAL_SERVER = {"127.0.0.1", "localhost"}


def _prose(markdown: str) -> str:
    """The text without fenced code blocks and inline code, where nothing is a link."""
    without_blocks = re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M)
    return re.sub(r"(`+)(?:(?!\1).)+\1", "", without_blocks)


def links(markdown: str) -> list[str]:
    prose = _prose(markdown)
    found = re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", prose)  # [text](target)
    found += re.findall(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", prose, flags=re.M)  # [label]: target
    found += re.findall(r"<((?:https?|mailto|file):[^>\s]+)>", prose)  # <https://…>
    found += re.findall(r"\b(?:href|src)\s*=\s*[\"']([^\"']+)[\"']", prose)  # HTML
    return found


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors for the headings: lower case, punctuation dropped, spaces to hyphens."""
    slugs = set()
    for heading in re.findall(
        r"^#{1,6}\s+(.+?)\s*#*\s*$", re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M), re.M
    ):
        text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
        slugs.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return slugs


TEXT = README.read_text()
LINKS = links(TEXT)


def test_links_are_found() -> None:
    assert "#benchmarks" in LINKS and "pyproject.toml" in LINKS
    assert links("see [a](docs/a.md), [b][1], <https://x.example>\n\n[1]: ../b.md\n`[no](c.md)`") == [
        "docs/a.md",
        "../b.md",
        "https://x.example",
    ]


@pytest.mark.parametrize("target", LINKS)
def test_every_link_leads_into_the_repository(target: str) -> None:
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        assert parts.scheme in {"http", "https"} and parts.hostname in LOCAL_SERVER, (
            f"{target}: the README links only to the repository and the local server"
        )
        return
    if not parts.path:
        assert parts.fragment in anchors(TEXT), f"{target}: no such heading in the README"
        return
    path = (README.parent / unquote(parts.path)).resolve()
    assert path.is_relative_to(ROOT), f"{target} is outside the repository"
    assert path.exists(), f"{target}: no such file in the repository"
    if parts.fragment and path.suffix == ".md":
        assert parts.fragment in anchors(path.read_text()), f"{target}: no such heading"


def test_nothing_in_the_readme_climbs_out_of_the_repository() -> None:
    """Paths in code spans are not links, but a reader follows them all the same."""
    assert "../" not in TEXT

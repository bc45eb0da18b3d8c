"""Confusable skeletons (Unicode Technical Standard #39, section 4) from Unicode's own data.

``confusables.txt`` beside this module is Unicode's data file, unchanged (its header says
which version; refresh it from https://www.unicode.org/Public/security/latest/). Neither
the standard library nor a maintained pure-Python package exposes the skeleton function
(ICU's SpoofChecker does, at the cost of a C++ build of ICU), and the function itself is
the standard's three steps over that table.
"""

from __future__ import annotations

import functools
import pathlib
import unicodedata

_DATA = pathlib.Path(__file__).with_name("confusables.txt")


@functools.cache
def _prototypes() -> dict[str, str]:
    """Source character -> its prototype (one or more characters), read once."""
    table: dict[str, str] = {}
    with _DATA.open(encoding="utf-8-sig") as lines:
        for line in lines:
            data = line.split("#", 1)[0].strip()
            if not data:
                continue
            source, target, _kind = (field.strip() for field in data.split(";"))
            table[chr(int(source, 16))] = "".join(chr(int(code, 16)) for code in target.split())
    return table


class Uts39Skeletons:
    """skeleton(X) = NFD(map each character of NFD(X) to its prototype)."""

    def __init__(self) -> None:
        self._table = _prototypes()

    def skeleton(self, text: str) -> str:
        table = self._table
        mapped = "".join(table.get(char, char) for char in unicodedata.normalize("NFD", text))
        return unicodedata.normalize("NFD", mapped)

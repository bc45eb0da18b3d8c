"""Rendered JSON kept for reuse: products per (id, version), and whole catalog pages
per listing version.

A product's JSON changes only when its version does (every change bumps it), so a
rendered copy keyed by both is never stale: a catalog page costs one small indexed
query for ids and versions, and only products that changed since are read and
rendered again. Several server processes each keep their own copies; the database
says which version is current, so they never disagree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable

from adapters.serialization import to_json, to_wire
from core.domain.catalog import Product


class RenderedProducts:
    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._rendered: dict[tuple[str, int], bytes] = {}

    def get(self, product_id: str, version: int) -> bytes | None:
        return self._rendered.get((product_id, version))

    def render(self, product: Product) -> bytes:
        body = to_json(to_wire(product))
        if len(self._rendered) >= self._capacity:
            # Oldest first: superseded versions are never asked for again and age out.
            del self._rendered[next(iter(self._rendered))]
        self._rendered[(product.id, product.version)] = body
        return body

    def __len__(self) -> int:
        return len(self._rendered)


class Rendered:
    """One rendered response, with the store's change counter it was read at."""

    __slots__ = ("_etag", "body", "version")

    def __init__(self, version: int, body: bytes) -> None:
        self.version = version
        self.body = body
        self._etag: str | None = None

    @property
    def etag(self) -> str:
        """A strong entity tag from the bytes themselves, computed once per rendered page (not
        per request): it changes whenever the content does, and only then (a page rebuilt
        after an unrelated commit keeps its tag, so clients keep getting 304)."""
        if self._etag is None:
            self._etag = f'"{hashlib.blake2b(self.body, digest_size=16).hexdigest()}"'
        return self._etag


class RenderedPages:
    """Whole responses (catalog pages, the caller's account), each with the store's change
    counter it was read at. One is served again only while the counter is unchanged, i.e.
    while nothing at all was committed by any process: then reading the database again
    would give the very same bytes. Under a steady write load they are simply rebuilt."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._pages: dict[Hashable, Rendered] = {}

    def get(self, key: Hashable, version: int) -> bytes | None:
        page = self.lookup(key, version)
        return page.body if page is not None else None

    def lookup(self, key: Hashable, version: int) -> Rendered | None:
        page = self._pages.get(key)
        return page if page is not None and page.version == version else None

    def put(self, key: Hashable, version: int, body: bytes) -> Rendered:
        if key not in self._pages and len(self._pages) >= self._capacity:
            del self._pages[next(iter(self._pages))]
        page = self._pages[key] = Rendered(version, body)
        return page

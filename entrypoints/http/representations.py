"""Rendered JSON kept for reuse: products per (id, version), and whole catalog pages
per listing version.

A product's JSON changes only when its version does (every change bumps it), so a
rendered copy keyed by both is never stale: a catalog page costs one small indexed
query for ids and versions, and only products that changed since are read and
rendered again. Several server processes each keep their own copies; the database
says which version is current, so they never disagree.
"""

from __future__ import annotations

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


class RenderedPages:
    """Whole responses (catalog pages, the caller's account), each with the store's change
    counter it was read at. One is served again only while the counter is unchanged, i.e.
    while nothing at all was committed by any process: then reading the database again
    would give the very same bytes. Under a steady write load they are simply rebuilt."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._pages: dict[Hashable, tuple[int, bytes]] = {}

    def get(self, key: Hashable, version: int) -> bytes | None:
        page = self._pages.get(key)
        return page[1] if page is not None and page[0] == version else None

    def put(self, key: Hashable, version: int, body: bytes) -> None:
        if key not in self._pages and len(self._pages) >= self._capacity:
            del self._pages[next(iter(self._pages))]
        self._pages[key] = (version, body)

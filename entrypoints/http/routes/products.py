"""The catalog: /api/v1/products/*."""

from __future__ import annotations

import re

from aiohttp import web

from adapters.serialization import command, to_json, to_wire
from core.domain.catalog import Product
from core.domain.pagination import PageRequest
from core.ports.repositories import ProductSort
from core.services.catalog import AdjustStock, CatalogService, CreateProduct, DeleteProduct, ListProducts, UpdateProduct
from entrypoints.http.api import Api, Input, Param, Reply, json_response
from entrypoints.http.caching import cacheable
from entrypoints.http.keys import CATALOG, PUBLIC_MAX_AGE, RENDERED_PAGES, RENDERED_PRODUCTS, STORE
from entrypoints.http.representations import RenderedProducts
from entrypoints.http.routes.common import (
    BODY_ERRORS,
    CONFLICT,
    FORBIDDEN,
    IF_MATCH,
    INVALID,
    LIST_ERRORS,
    NOT_FOUND,
    PAGE,
    PRECONDITION,
    UNAUTHENTICATED,
)
from entrypoints.http.schemas import ADJUST_STOCK, AMOUNT, CREATE_PRODUCT, UPDATE_PRODUCT, list_of, ref

api = Api()

#: What ``sort`` may be: every ProductSort but the default (the id order, which it names by absence).
SORTS = [s.value for s in ProductSort if s is not ProductSort.ID]
_ETAG = re.compile(r'^(?:W/)?"v(\d{1,18})"$')


def etag(product: Product) -> str:
    return f'"v{product.version}"'


def expected_version(request: web.Request) -> int | None:
    """The version named by If-Match; None when absent or ``*``. An If-Match that names
    no version of ours can never match, so it is version 0 (there is none)."""
    header = request.headers.get("If-Match")
    if header is None or header.strip() == "*":
        return None
    match = _ETAG.match(header.split(",")[0].strip())
    return int(match.group(1)) if match else 0


def _product_response(product: Product, status: int = 200) -> web.Response:
    return json_response(to_wire(product), status=status, headers={"ETag": etag(product)})


ETAG_HEADER = ("ETag",)
CACHE_HEADERS = ("ETag", "Cache-Control", "Vary")
NOT_MODIFIED = Reply(304, "Not modified: the `ETag` sent in `If-None-Match` is current.", None, CACHE_HEADERS)
IF_NONE_MATCH = Param(
    "If-None-Match",
    {"type": "string", "maxLength": 2048},
    "ETags you have (or `*`): 304 without a body if one is current (compared weakly).",
)


@api.operation(
    "GET",
    "/api/v1/products",
    summary="List and search products",
    tag="catalog",
    auth="optional",
    scope="catalog:read",
    query=(
        *PAGE,
        Param(
            "q",
            {"type": "string", "maxLength": 200, "examples": ["mug"]},
            "Words (or word beginnings) of name, sku or description.",
        ),
        Param("active", {"type": "boolean"}, "Staff only: filter by the active flag. Others see active products."),
        Param("price_min", AMOUNT, "Lowest price, inclusive, in minor units."),
        Param("price_max", AMOUNT, "Highest price, inclusive, in minor units; not below `price_min` (422)."),
        Param(
            "sort",
            {"type": "string", "enum": SORTS},
            "The order: by `price`, `name` (A-Z in either case first) or `created_at`; a leading `-`"
            " reverses it. Ties are broken by id. Without it, oldest first (by id).",
        ),
    ),
    headers=(IF_NONE_MATCH,),
    replies=(
        Reply(
            200,
            "A page of products, in the order `sort` says (oldest first without it).",
            list_of("Product"),
            CACHE_HEADERS,
        ),
        NOT_MODIFIED,
        UNAUTHENTICATED,
        *LIST_ERRORS,
    ),
)
async def list_products(request: web.Request, i: Input) -> web.Response:
    """Anyone may list the active catalog; staff also see inactive products. Without a
    token the page may be cached publicly for a few seconds (`Cache-Control`); its `ETag`
    changes whenever its content does, and `If-None-Match` with it answers 304."""
    q = i.query
    catalog = request.app[CATALOG]
    pages = request.app[RENDERED_PAGES]
    version = request.app[STORE].change_counter()
    # Pages are kept per kind of reader; whether a token's staff claim still holds is the
    # catalog's to say (a demoted member of staff must not be served the staff page).
    actor = await catalog.reader(i.actor)
    key = (
        actor.is_staff,
        q.get("limit"),
        q.get("cursor"),
        q.get("q"),
        q.get("active"),
        q.get("price_min"),
        q.get("price_max"),
        q.get("sort"),
    )
    page = pages.lookup(key, version)
    if page is None:
        rendered = await _render_page(catalog, request.app[RENDERED_PRODUCTS], Input(actor, i.body, i.query))
        page = pages.put(key, version, rendered)
    return cacheable(request, actor, page.body, page.etag, request.app[PUBLIC_MAX_AGE])


async def _render_page(catalog: CatalogService, rendered: RenderedProducts, i: Input) -> bytes:
    q = i.query
    page = await catalog.list_product_versions(
        ListProducts(
            actor=i.actor,
            page=PageRequest(limit=q["limit"], after=q.get("cursor")),
            text=q.get("q"),
            active=q.get("active"),
            price_min=q.get("price_min"),
            price_max=q.get("price_max"),
            sort=ProductSort(q["sort"]) if "sort" in q else ProductSort.ID,
        )
    )
    parts = {v.id: rendered.get(v.id, v.version) for v in page.items}
    missing = [product_id for product_id, body in parts.items() if body is None]
    if missing:
        # Changed since last rendered (or never seen): read and render just these. One may
        # have changed again or gone since the list was read; the newest copy is shown.
        for product in await catalog.get_products(i.actor, missing):
            parts[product.id] = rendered.render(product)
    meta = to_json({"has_more": page.has_more, "next_cursor": page.next_after})
    return b"".join((b'{"data":[', b",".join(b for b in parts.values() if b is not None), b'],"meta":', meta, b"}"))


@api.operation(
    "POST",
    "/api/v1/products",
    summary="Create a product",
    tag="catalog",
    auth="staff",
    scope="catalog:write",
    body=CREATE_PRODUCT,
    replies=(
        Reply(201, "The new product.", ref("Product"), ETAG_HEADER),
        UNAUTHENTICATED,
        FORBIDDEN,
        CONFLICT,
        *BODY_ERRORS,
    ),
)
async def create_product(request: web.Request, i: Input) -> web.Response:
    """`price` is an integer in minor units of the store currency; `currency`, if sent, must be it."""
    product = await request.app[CATALOG].create_product(command(CreateProduct, i.body, actor=i.actor))
    return _product_response(product, status=201)


@api.operation(
    "GET",
    "/api/v1/products/{product_id}",
    summary="One product",
    tag="catalog",
    auth="optional",
    scope="catalog:read",
    headers=(IF_NONE_MATCH,),
    replies=(
        Reply(200, "The product.", ref("Product"), CACHE_HEADERS),
        NOT_MODIFIED,
        UNAUTHENTICATED,
        NOT_FOUND,
    ),
)
async def get_product(request: web.Request, i: Input) -> web.Response:
    """Carries an ETag: send it back in If-Match to update safely, or in If-None-Match to
    get 304 while it is current. Without a token it may be cached publicly for a few seconds."""
    product = await request.app[CATALOG].get_product(i.actor, request.match_info["product_id"])
    rendered = request.app[RENDERED_PRODUCTS]
    body = rendered.get(product.id, product.version) or rendered.render(product)
    return cacheable(request, i.actor, body, etag(product), request.app[PUBLIC_MAX_AGE])


@api.operation(
    "PATCH",
    "/api/v1/products/{product_id}",
    summary="Change a product",
    tag="catalog",
    auth="staff",
    scope="catalog:write",
    body=UPDATE_PRODUCT,
    headers=(IF_MATCH,),
    replies=(
        Reply(200, "The product.", ref("Product"), ETAG_HEADER),
        UNAUTHENTICATED,
        FORBIDDEN,
        NOT_FOUND,
        CONFLICT,
        PRECONDITION,
        *BODY_ERRORS,
    ),
)
async def update_product(request: web.Request, i: Input) -> web.Response:
    """Only the fields sent change. With If-Match, the change applies only to that version."""
    product = await request.app[CATALOG].update_product(
        command(
            UpdateProduct,
            i.body,
            actor=i.actor,
            product_id=request.match_info["product_id"],
            expected_version=expected_version(request),
        )
    )
    return _product_response(product)


@api.operation(
    "DELETE",
    "/api/v1/products/{product_id}",
    summary="Delete a product",
    tag="catalog",
    auth="staff",
    scope="catalog:write",
    headers=(IF_MATCH,),
    replies=(Reply(204, "Deleted."), UNAUTHENTICATED, FORBIDDEN, NOT_FOUND, PRECONDITION, INVALID),
)
async def delete_product(request: web.Request, i: Input) -> web.Response:
    """To hide a product but keep it, PATCH `active` to false instead."""
    await request.app[CATALOG].delete_product(
        DeleteProduct(
            actor=i.actor, product_id=request.match_info["product_id"], expected_version=expected_version(request)
        )
    )
    return web.Response(status=204)


@api.operation(
    "POST",
    "/api/v1/products/{product_id}/stock",
    summary="Add or remove stock",
    tag="catalog",
    auth="staff",
    scope="catalog:write",
    body=ADJUST_STOCK,
    headers=(IF_MATCH,),
    replies=(
        Reply(200, "The product with its new stock.", ref("Product"), ETAG_HEADER),
        UNAUTHENTICATED,
        FORBIDDEN,
        NOT_FOUND,
        Reply(409, "The delta would take stock below zero (`insufficient_stock`).", ref("Error")),
        PRECONDITION,
        *BODY_ERRORS,
    ),
)
async def adjust_stock(request: web.Request, i: Input) -> web.Response:
    """`delta` is added to the stock (negative removes); stock never goes below zero."""
    product = await request.app[CATALOG].adjust_stock(
        command(
            AdjustStock,
            i.body,
            actor=i.actor,
            product_id=request.match_info["product_id"],
            expected_version=expected_version(request),
        )
    )
    return _product_response(product)

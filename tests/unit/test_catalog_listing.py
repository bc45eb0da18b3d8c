"""Listing and searching the catalog: visibility, filters, text search, keyset pages."""

from __future__ import annotations

import pytest

from core.domain.catalog import Product
from core.domain.errors import ValidationFailed
from core.domain.pagination import PageRequest
from core.domain.users import Actor, Role
from core.services.catalog import MAX_SEARCH_LENGTH, CatalogService, CreateProduct, ListProducts, UpdateProduct


@pytest.fixture
async def shelf(catalog: CatalogService, staff: Actor) -> dict[str, Product]:
    """Five products in id order; the lamp is inactive."""
    rows = [
        ("MUG-1", "Blue mug", "Stoneware coffee mug", 1200, True),
        ("MUG-2", "Red mug", "Porcelain tea mug", 1500, True),
        ("PEN-1", "Fountain pen", "Blue ink, steel nib", 2500, True),
        ("LAMP-1", "Desk lamp", "Warm light", 4000, False),
        ("TEA-1", "Green tea", "Loose leaf, 100 g", 800, True),
    ]
    made = {}
    for sku, name, description, price, active in rows:
        made[sku] = await catalog.create_product(
            CreateProduct(actor=staff, sku=sku, name=name, description=description, price=price, active=active)
        )
    return made


async def _skus(catalog: CatalogService, actor: Actor, **query: object) -> list[str]:
    page = await catalog.list_products(ListProducts(actor=actor, **query))  # type: ignore[arg-type]
    return [p.sku for p in page.items]


ALL = ["MUG-1", "MUG-2", "PEN-1", "LAMP-1", "TEA-1"]
ACTIVE = ["MUG-1", "MUG-2", "PEN-1", "TEA-1"]


async def test_customers_and_anonymous_see_only_active_products(
    catalog: CatalogService, shelf: dict[str, Product], customer: Actor, anonymous: Actor
) -> None:
    for actor in (customer, anonymous):
        assert await _skus(catalog, actor) == ACTIVE
        # Asking for inactive products does not reveal them.
        assert await _skus(catalog, actor, active=False) == ACTIVE
        assert await _skus(catalog, actor, text="lamp") == []


async def test_staff_see_everything_and_filter_by_active(
    catalog: CatalogService, shelf: dict[str, Product], staff: Actor, admin_actor: Actor
) -> None:
    for actor in (staff, admin_actor):
        assert await _skus(catalog, actor) == ALL
        assert await _skus(catalog, actor, active=True) == ACTIVE
        assert await _skus(catalog, actor, active=False) == ["LAMP-1"]


async def test_list_returns_the_stored_products(
    catalog: CatalogService, shelf: dict[str, Product], staff: Actor
) -> None:
    page = await catalog.list_products(ListProducts(actor=staff))

    assert page.items == list(shelf.values())
    assert (page.next_after, page.has_more) == (None, False)


async def test_price_range_is_inclusive(catalog: CatalogService, shelf: dict[str, Product], staff: Actor) -> None:
    assert await _skus(catalog, staff, price_min=1200, price_max=2500) == ["MUG-1", "MUG-2", "PEN-1"]
    assert await _skus(catalog, staff, price_min=1201, price_max=2499) == ["MUG-2"]
    assert await _skus(catalog, staff, price_min=1500, price_max=1500) == ["MUG-2"]
    assert await _skus(catalog, staff, price_min=2500) == ["PEN-1", "LAMP-1"]
    assert await _skus(catalog, staff, price_max=800) == ["TEA-1"]
    assert await _skus(catalog, staff, price_max=799) == []


@pytest.mark.parametrize("listing", ["list_products", "list_product_versions"])
async def test_price_min_above_price_max_is_refused_naming_both(
    catalog: CatalogService, shelf: dict[str, Product], staff: Actor, listing: str
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await getattr(catalog, listing)(ListProducts(actor=staff, price_min=2000, price_max=1999))

    assert caught.value.details == {
        "fields": {"price_min": "must not be greater than price_max", "price_max": "must not be less than price_min"}
    }
    # Equal bounds are a range of one price, and either bound alone is fine.
    assert await _skus(catalog, staff, price_min=1500, price_max=1500) == ["MUG-2"]


async def test_every_problem_of_a_listing_is_named_at_once(
    catalog: CatalogService, shelf: dict[str, Product], customer: Actor
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await catalog.list_products(ListProducts(actor=customer, text="m" * 201, price_min=2, price_max=1))

    assert set(caught.value.details["fields"]) == {"q", "price_min", "price_max"}


@pytest.mark.parametrize(
    ("text", "skus"),
    [
        ("mug", ["MUG-1", "MUG-2"]),
        ("MUG", ["MUG-1", "MUG-2"]),
        ("blue", ["MUG-1", "PEN-1"]),  # name of one, description of the other
        ("blue mug", ["MUG-1"]),  # every word must match
        ("mug blue", ["MUG-1"]),  # in any order
        ("blue tea", []),
        ("porc", ["MUG-2"]),  # a word prefix
        ("stone cof", ["MUG-1"]),  # prefixes of two words
        ("ware", []),  # not a prefix of any word
        ("pen-1", ["PEN-1"]),  # a sku
        ("leaf", ["TEA-1"]),
        ("  tea  ", ["MUG-2", "TEA-1"]),
        ("nothing-like-this", []),
    ],
)
async def test_text_search(
    catalog: CatalogService, shelf: dict[str, Product], customer: Actor, text: str, skus: list[str]
) -> None:
    assert await _skus(catalog, customer, text=text) == skus


@pytest.mark.parametrize(
    ("text", "skus"),
    [
        ('"mug', ["MUG-1", "MUG-2"]),
        ("mug*", ["MUG-1", "MUG-2"]),
        ("mug OR pen", []),  # OR is a word to find, not an operator
        ("NEAR(mug)", []),
        ("'; DROP TABLE products; --", []),
        ("(", []),
        ("%_", []),
    ],
)
async def test_search_engine_syntax_is_just_text(
    catalog: CatalogService, shelf: dict[str, Product], staff: Actor, text: str, skus: list[str]
) -> None:
    assert await _skus(catalog, staff, text=text) == skus
    assert await _skus(catalog, staff) == ALL  # and the shelf is intact


async def test_blank_search_lists_everything(
    catalog: CatalogService, shelf: dict[str, Product], customer: Actor
) -> None:
    assert await _skus(catalog, customer, text="") == ACTIVE
    assert await _skus(catalog, customer, text="   ") == ACTIVE


async def test_search_text_is_limited_to_200_characters(
    catalog: CatalogService, shelf: dict[str, Product], customer: Actor
) -> None:
    assert MAX_SEARCH_LENGTH == 200
    assert await _skus(catalog, customer, text="m" * 200) == []
    assert await _skus(catalog, customer, text=" mug " + " " * 300) == ["MUG-1", "MUG-2"]  # measured after stripping

    with pytest.raises(ValidationFailed) as caught:
        await catalog.list_products(ListProducts(actor=customer, text="m" * 201))

    assert caught.value.details == {"fields": {"q": "must have at most 200 characters"}}


async def test_search_combines_with_other_filters(
    catalog: CatalogService, shelf: dict[str, Product], staff: Actor
) -> None:
    assert await _skus(catalog, staff, text="mug", price_min=1300) == ["MUG-2"]
    await catalog.update_product(UpdateProduct(actor=staff, product_id=shelf["MUG-2"].id, active=False))
    assert await _skus(catalog, staff, text="mug", active=True) == ["MUG-1"]


async def test_search_sees_updated_text(catalog: CatalogService, shelf: dict[str, Product], staff: Actor) -> None:
    await catalog.update_product(UpdateProduct(actor=staff, product_id=shelf["TEA-1"].id, name="Matcha"))

    assert await _skus(catalog, staff, text="matcha") == ["TEA-1"]
    assert await _skus(catalog, staff, text="green") == []


async def test_pages_by_id_are_exact(catalog: CatalogService, shelf: dict[str, Product], staff: Actor) -> None:
    first = await catalog.list_products(ListProducts(actor=staff, page=PageRequest(limit=2)))
    second = await catalog.list_products(ListProducts(actor=staff, page=PageRequest(limit=2, after=first.next_after)))
    third = await catalog.list_products(ListProducts(actor=staff, page=PageRequest(limit=2, after=second.next_after)))

    assert [[p.sku for p in page.items] for page in (first, second, third)] == [
        ["MUG-1", "MUG-2"],
        ["PEN-1", "LAMP-1"],
        ["TEA-1"],
    ]
    assert (first.has_more, second.has_more, third.has_more, third.next_after) == (True, True, False, None)


async def test_filtered_pages_skip_hidden_products_without_gaps(
    catalog: CatalogService, shelf: dict[str, Product], customer: Actor
) -> None:
    first = await catalog.list_products(ListProducts(actor=customer, page=PageRequest(limit=3)))
    second = await catalog.list_products(
        ListProducts(actor=customer, page=PageRequest(limit=3, after=first.next_after))
    )

    assert [p.sku for p in first.items] == ["MUG-1", "MUG-2", "PEN-1"]
    assert first.has_more
    assert [p.sku for p in second.items] == ["TEA-1"]
    assert second.has_more is False


async def test_an_empty_catalog(catalog: CatalogService, customer: Actor) -> None:
    page = await catalog.list_products(ListProducts(actor=customer))

    assert (page.items, page.next_after) == ([], None)


async def test_versions_and_get_products_follow_the_visibility_rules(
    catalog: CatalogService, shelf: dict[str, Product], staff: Actor
) -> None:
    customer = Actor(user_id="usr_c", role=Role.CUSTOMER)
    for actor in (customer, staff):
        page = await catalog.list_products(ListProducts(actor=actor, page=PageRequest(limit=100)))
        versions = await catalog.list_product_versions(ListProducts(actor=actor, page=PageRequest(limit=100)))
        assert [(v.id, v.version) for v in versions.items] == [(p.id, p.version) for p in page.items]
    every_id = [p.id for p in shelf.values()]
    seen_by_customer = await catalog.get_products(customer, every_id)
    seen_by_staff = await catalog.get_products(staff, every_id)
    assert {p.id for p in seen_by_customer} == {p.id for p in shelf.values() if p.active}
    assert {p.id for p in seen_by_staff} == set(every_id)
    assert any(not p.active for p in shelf.values())

"""ProductRepository: every adapter behaves the same (see core/ports/repositories.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.domain.catalog import Product
from core.domain.errors import ConcurrentUpdate, InsufficientStock, SkuTaken
from core.domain.money import Money
from core.domain.pagination import Page, PageRequest
from core.ports.repositories import ProductFilter, ProductSort, ProductVersion
from core.ports.unit_of_work import UnitOfWorkFactory
from tests.contract.builders import Make, store
from tests.fakes import FixedClock


async def _get(uow_factory: UnitOfWorkFactory, product_id: str) -> Product | None:
    async with uow_factory(readonly=True) as uow:
        return await uow.products.get(product_id)


async def _list(uow_factory: UnitOfWorkFactory, f: ProductFilter, limit: int = 100) -> list[str]:
    """The skus of every match, following pages of `limit`."""
    skus: list[str] = []
    after = None
    async with uow_factory(readonly=True) as uow:
        while True:
            page = await uow.products.list(PageRequest(limit=limit, after=after), f)
            skus += [p.sku for p in page.items]
            if page.next_after is None:
                return skus
            after = page.next_after


# Reading and writing one product.
async def test_a_product_reads_back_exactly_as_added(uow_factory: UnitOfWorkFactory, make: Make) -> None:
    lamp = make.product("LAMP-1", name="Desk lamp", description="Brass, 40 cm.", price=4999, stock=3, active=False)
    await store(uow_factory, lamp)

    async with uow_factory(readonly=True) as uow:
        assert await uow.products.get(lamp.id) == lamp
        assert await uow.products.get_by_sku("LAMP-1") == lamp
        assert await uow.products.get("prd_nothing") is None
        assert await uow.products.get_by_sku("lamp-1") is None  # skus are exact


async def test_a_taken_sku_is_refused_and_the_first_product_kept(uow_factory: UnitOfWorkFactory, make: Make) -> None:
    lamp = make.product("LAMP-1", name="Desk lamp")
    await store(uow_factory, lamp)

    async with uow_factory() as uow:
        with pytest.raises(SkuTaken) as caught:
            await uow.products.add(make.product("LAMP-1", name="Other lamp"))
        await uow.commit()

    assert caught.value.details == {"sku": "LAMP-1"}
    assert await _get(uow_factory, lamp.id) == lamp
    assert await _list(uow_factory, ProductFilter()) == ["LAMP-1"]


async def test_update_persists_every_field_and_the_new_version(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock
) -> None:
    lamp = make.product("LAMP-1", name="Desk lamp", price=4999, stock=3)
    await store(uow_factory, lamp)
    clock.advance(hours=1)

    async with uow_factory() as uow:
        product = await uow.products.get(lamp.id)
        assert product is not None
        changed = product.update(
            {
                "sku": "LAMP-2",
                "name": "Floor lamp",
                "description": "Tall.",
                "price": Money(9999, "USD"),
                "active": False,
            },
            at=clock.now(),
        )
        assert set(changed) == {"sku", "name", "description", "price", "active"}
        await uow.products.update(product)
        await uow.commit()

    stored = await _get(uow_factory, lamp.id)
    assert stored == Product(
        id=lamp.id,
        sku="LAMP-2",
        name="Floor lamp",
        description="Tall.",
        price=Money(9999, "USD"),
        stock=3,
        active=False,
        created_at=lamp.created_at,
        updated_at=clock.now(),
        version=2,
    )
    async with uow_factory(readonly=True) as uow:
        assert await uow.products.get_by_sku("LAMP-1") is None
        assert await uow.products.get_by_sku("LAMP-2") == stored


async def test_stock_adjustments_persist_and_never_go_below_zero(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock
) -> None:
    lamp = make.product("LAMP-1", stock=3)
    await store(uow_factory, lamp)

    async with uow_factory() as uow:
        product = await uow.products.get(lamp.id)
        assert product is not None
        product.adjust_stock(-3, at=clock.now())
        await uow.products.update(product)
        with pytest.raises(InsufficientStock):
            product.adjust_stock(-1, at=clock.now())
        await uow.commit()

    stored = await _get(uow_factory, lamp.id)
    assert stored is not None
    assert (stored.stock, stored.version) == (0, 2)


async def test_an_update_from_a_stale_read_is_a_concurrent_update(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock
) -> None:
    lamp = make.product("LAMP-1", stock=3)
    await store(uow_factory, lamp)
    async with uow_factory(readonly=True) as uow:
        first_read = await uow.products.get(lamp.id)
        second_read = await uow.products.get(lamp.id)
    assert first_read is not None
    assert second_read is not None

    first_read.adjust_stock(+1, at=clock.now())
    async with uow_factory() as uow:
        await uow.products.update(first_read)
        await uow.commit()

    second_read.adjust_stock(+10, at=clock.now())  # also version 2, but the row is at 2 already
    async with uow_factory() as uow:
        with pytest.raises(ConcurrentUpdate):
            await uow.products.update(second_read)

    stored = await _get(uow_factory, lamp.id)
    assert stored is not None
    assert (stored.stock, stored.version) == (4, 2)


async def test_updating_a_deleted_product_is_a_concurrent_update(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock
) -> None:
    lamp = make.product("LAMP-1")
    await store(uow_factory, lamp)
    async with uow_factory() as uow:
        assert await uow.products.delete(lamp.id) is True
        await uow.commit()

    lamp.adjust_stock(+1, at=clock.now())
    async with uow_factory() as uow:
        with pytest.raises(ConcurrentUpdate):
            await uow.products.update(lamp)


async def test_update_to_a_taken_sku_is_refused(uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock) -> None:
    lamp = make.product("LAMP-1")
    chair = make.product("CHAIR-1")
    await store(uow_factory, lamp, chair)

    chair.update({"sku": "LAMP-1"}, at=clock.now())
    async with uow_factory() as uow:
        with pytest.raises(SkuTaken):
            await uow.products.update(chair)
        await uow.commit()

    stored = await _get(uow_factory, chair.id)
    assert stored is not None
    assert (stored.sku, stored.version) == ("CHAIR-1", 1)


async def test_delete_says_whether_there_was_a_product(uow_factory: UnitOfWorkFactory, make: Make) -> None:
    lamp = make.product("LAMP-1", name="Desk lamp")
    chair = make.product("CHAIR-1")
    await store(uow_factory, lamp, chair)

    async with uow_factory() as uow:
        assert await uow.products.delete(lamp.id) is True
        assert await uow.products.delete(lamp.id) is False
        assert await uow.products.delete("prd_nothing") is False
        await uow.commit()

    assert await _get(uow_factory, lamp.id) is None
    assert await _list(uow_factory, ProductFilter()) == ["CHAIR-1"]
    assert await _list(uow_factory, ProductFilter(text="desk")) == []  # gone from the search too
    await store(uow_factory, make.product("LAMP-1"))  # and its sku is free again
    assert await _list(uow_factory, ProductFilter()) == ["CHAIR-1", "LAMP-1"]


# Lists.
async def test_lists_are_ordered_by_id_and_paginated_by_the_last_id(uow_factory: UnitOfWorkFactory, make: Make) -> None:
    products = [make.product(f"SKU-{n}") for n in range(5)]
    await store(uow_factory, *reversed(products))

    async with uow_factory(readonly=True) as uow:
        first = await uow.products.list(PageRequest(limit=2), ProductFilter())
        second = await uow.products.list(PageRequest(limit=2, after=first.next_after), ProductFilter())
        third = await uow.products.list(PageRequest(limit=2, after=second.next_after), ProductFilter())
        everything = await uow.products.list(PageRequest(limit=5), ProductFilter())

    assert (first.items, first.has_more) == (products[0:2], True)
    assert (second.items, second.has_more) == (products[2:4], True)
    assert third == Page(items=products[4:5], next_after=None)
    assert everything == Page(items=products, next_after=None)

    async with uow_factory() as uow:  # the item a cursor ends at goes: the cursor still continues
        assert await uow.products.delete(products[3].id)
        await uow.commit()
    async with uow_factory(readonly=True) as uow:
        assert await uow.products.list(PageRequest(limit=2, after=second.next_after), ProductFilter()) == third


async def test_lists_filter_by_active_and_an_inclusive_price_range(uow_factory: UnitOfWorkFactory, make: Make) -> None:
    await store(
        uow_factory,
        make.product("A", price=0),
        make.product("B", price=500, active=False),
        make.product("C", price=1000),
        make.product("D", price=1500),
        make.product("E", price=2000, active=False),
    )

    assert await _list(uow_factory, ProductFilter(active=True)) == ["A", "C", "D"]
    assert await _list(uow_factory, ProductFilter(active=False)) == ["B", "E"]
    assert await _list(uow_factory, ProductFilter(price_min=500)) == ["B", "C", "D", "E"]
    assert await _list(uow_factory, ProductFilter(price_max=1000)) == ["A", "B", "C"]
    assert await _list(uow_factory, ProductFilter(price_min=500, price_max=1500)) == ["B", "C", "D"]
    assert await _list(uow_factory, ProductFilter(price_min=1000, price_max=1000)) == ["C"]
    assert await _list(uow_factory, ProductFilter(active=True, price_min=1, price_max=1999)) == ["C", "D"]
    assert await _list(uow_factory, ProductFilter(active=False, price_min=2001)) == []


async def test_filtered_pages_continue_after_the_last_id(uow_factory: UnitOfWorkFactory, make: Make) -> None:
    products = [make.product(f"SKU-{n}", active=n % 3 != 0) for n in range(10)]
    await store(uow_factory, *products)

    assert await _list(uow_factory, ProductFilter(active=True), limit=2) == [f"SKU-{n}" for n in (1, 2, 4, 5, 7, 8)]
    assert await _list(uow_factory, ProductFilter(active=True), limit=6) == [f"SKU-{n}" for n in (1, 2, 4, 5, 7, 8)]


# Text search.
@pytest.fixture
async def catalog(uow_factory: UnitOfWorkFactory, make: Make) -> UnitOfWorkFactory:
    await store(
        uow_factory,
        make.product("LAMP-100", name="Brass desk lamp", description="A warm light for reading."),
        make.product("LAMP-200", name="Floor lamp", description="Tall, with a linen shade.", active=False),
        make.product("CHAIR-7", name="Reading chair", description="Oak frame; wool cover."),
        make.product("MUG-3", name="Café mug", description="Stoneware, 300 ml."),
        make.product("TABLE-1", name="Oak table", description="Seats six. Brass feet."),
    )
    return uow_factory


@pytest.mark.parametrize(
    ("text", "skus"),
    [
        ("lamp", ["LAMP-100", "LAMP-200"]),  # the name
        ("linen", ["LAMP-200"]),  # the description
        ("chair", ["CHAIR-7"]),  # also the sku
        ("LAMP-200", ["LAMP-200"]),  # a whole sku: its words, in any field
        ("200", ["LAMP-200"]),
        ("brass", ["LAMP-100", "TABLE-1"]),
        ("BRASS Lamp", ["LAMP-100"]),  # every word, in any case
        ("lamp brass", ["LAMP-100"]),  # in any order
        ("la", ["LAMP-100", "LAMP-200"]),  # prefixes of words
        ("read", ["LAMP-100", "CHAIR-7"]),
        ("oak fr", ["CHAIR-7"]),
        ("amp", []),  # not the middle of a word
        ("lamp chair", []),
        ("cafe", ["MUG-3"]),  # accents do not matter
        ("CAFÉ", ["MUG-3"]),
        ("300ml", []),  # words are split only where the text has a separator
        ("300 ml", ["MUG-3"]),
        ("  lamp,  (brass!) ", ["LAMP-100"]),  # punctuation is dropped
    ],
)
async def test_text_matches_words_and_word_prefixes_of_name_sku_and_description(
    catalog: UnitOfWorkFactory, text: str, skus: list[str]
) -> None:
    assert await _list(catalog, ProductFilter(text=text)) == skus


@pytest.mark.parametrize(
    ("text", "skus"),
    [
        ("'; DROP TABLE products; --", []),
        ("lamp'; DROP TABLE products; --", []),
        ('"', []),
        ('"lamp', ["LAMP-100", "LAMP-200"]),
        ('lamp"*', ["LAMP-100", "LAMP-200"]),
        ("NEAR(", []),
        ("NEAR(lamp brass)", []),  # NEAR is just a word, and no product has it
        ("*", []),
        ("lamp*", ["LAMP-100", "LAMP-200"]),
        ("name:lamp", []),  # not a column filter: "name" and "lamp" are both words
        ("description:linen", []),
        ("brass AND lamp", []),  # AND is a word too
        ("AND OR NOT", []),
        ("lamp OR chair", []),
        ("-lamp", ["LAMP-100", "LAMP-200"]),
        ("^lamp", ["LAMP-100", "LAMP-200"]),
        ("lamp + brass", ["LAMP-100"]),
        ("{name}: lamp", []),
        ("\x00lamp\x00", ["LAMP-100", "LAMP-200"]),
        ("", []),  # no word at all matches nothing
        ("   ", []),
        ("!@#$%^&*()_+-=[]{}|;':\",./<>?", []),
    ],
)
async def test_any_text_is_safe_and_means_only_its_words(
    catalog: UnitOfWorkFactory, text: str, skus: list[str]
) -> None:
    assert await _list(catalog, ProductFilter(text=text)) == skus
    async with catalog(readonly=True) as uow:  # and the catalog is still all there
        assert len((await uow.products.list(PageRequest(limit=100), ProductFilter())).items) == 5


async def test_text_combines_with_the_other_filters(catalog: UnitOfWorkFactory) -> None:
    assert await _list(catalog, ProductFilter(text="lamp", active=True)) == ["LAMP-100"]
    assert await _list(catalog, ProductFilter(text="lamp", active=False)) == ["LAMP-200"]
    assert await _list(catalog, ProductFilter(text="oak", price_min=1000, price_max=1000)) == ["CHAIR-7", "TABLE-1"]
    assert await _list(catalog, ProductFilter(text="oak", price_max=999)) == []


async def test_search_results_are_ordered_by_id_and_paginated(uow_factory: UnitOfWorkFactory, make: Make) -> None:
    products = [make.product(f"SKU-{n}", name="Blue mug" if n % 2 else "Red plate") for n in range(9)]
    await store(uow_factory, *reversed(products))
    mugs = [p for p in products if p.name == "Blue mug"]

    async with uow_factory(readonly=True) as uow:
        first = await uow.products.list(PageRequest(limit=3), ProductFilter(text="mug"))
        second = await uow.products.list(PageRequest(limit=3, after=first.next_after), ProductFilter(text="mug"))

    assert (first.items, first.has_more) == (mugs[:3], True)
    assert second == Page(items=mugs[3:], next_after=None)


async def test_search_follows_updates(uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock) -> None:
    mug = make.product("MUG-1", name="Blue mug")
    await store(uow_factory, mug)

    mug.update({"name": "Green cup", "description": "Glazed."}, at=clock.now())
    async with uow_factory() as uow:
        await uow.products.update(mug)
        await uow.commit()

    assert await _list(uow_factory, ProductFilter(text="blue")) == []
    assert await _list(uow_factory, ProductFilter(text="green glazed")) == ["MUG-1"]

    mug.adjust_stock(+1, at=clock.now())  # a change that is not to the words keeps them
    async with uow_factory() as uow:
        await uow.products.update(mug)
        await uow.commit()
    assert await _list(uow_factory, ProductFilter(text="green")) == ["MUG-1"]


# Versions: the cheap form of a list, for callers that keep copies.
@pytest.mark.parametrize(
    "product_filter",
    [
        ProductFilter(),
        ProductFilter(active=True),
        ProductFilter(active=False, price_min=500),
        ProductFilter(price_min=1000, price_max=1500),
        ProductFilter(text="oak"),
        ProductFilter(text="lamp", active=True),
        ProductFilter(text="nothing-matches-this"),
    ],
)
async def test_list_versions_is_exactly_the_page_of_list(
    catalog: UnitOfWorkFactory, product_filter: ProductFilter
) -> None:
    async with catalog(readonly=True) as uow:
        after = None
        while True:
            page = await uow.products.list(PageRequest(limit=2, after=after), product_filter)
            versions = await uow.products.list_versions(PageRequest(limit=2, after=after), product_filter)
            assert versions == Page(
                items=[ProductVersion(p.id, p.version) for p in page.items], next_after=page.next_after
            )
            if page.next_after is None:
                break
            after = page.next_after


async def test_list_versions_follow_updates(uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock) -> None:
    product = make.product("VER-1")
    await store(uow_factory, product)
    async with uow_factory() as uow:
        stored = await uow.products.get(product.id)
        assert stored is not None
        stored.update({"name": "Renamed"}, at=clock.now())
        await uow.products.update(stored)
        await uow.commit()
    async with uow_factory(readonly=True) as uow:
        versions = await uow.products.list_versions(PageRequest(), ProductFilter())
    assert versions.items == [ProductVersion(product.id, 2)]


async def test_get_many_returns_the_products_that_exist(uow_factory: UnitOfWorkFactory, make: Make) -> None:
    a, b, c = make.product("GM-A"), make.product("GM-B"), make.product("GM-C")
    await store(uow_factory, a, b, c)
    async with uow_factory(readonly=True) as uow:
        found = await uow.products.get_many([c.id, "prd_missing", a.id, a.id])
        nothing = await uow.products.get_many([])
    assert sorted(found, key=lambda p: p.id) == [a, c]
    assert nothing == []


async def test_get_many_by_sku_returns_the_products_that_exist(uow_factory: UnitOfWorkFactory, make: Make) -> None:
    a, b, c = make.product("GM-A"), make.product("GM-B"), make.product("GM-C")
    await store(uow_factory, a, b, c)
    async with uow_factory(readonly=True) as uow:
        found = await uow.products.get_many_by_sku(["GM-C", "GM-missing", "GM-A", "GM-A", "gm-b"])
        nothing = await uow.products.get_many_by_sku([])
    assert sorted(found, key=lambda p: p.id) == [a, c]  # skus are exact
    assert nothing == []


# Sorts.
@pytest.fixture
async def sortable(uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock) -> UnitOfWorkFactory:
    """Ties in every key: A and C share a price, B and C a name but for its case and a
    time, E and F a time; D was created before A but made after it (a later id)."""
    t0 = clock.now()
    made = {}
    for sku, name, price, at, active in [
        ("A", "banana", 500, t0, True),
        ("B", "Apple", 1500, t0 + timedelta(hours=1), True),
        ("C", "apple", 500, t0 + timedelta(hours=1), True),
        ("D", "Cherry", 2500, t0 - timedelta(hours=1), True),
        ("E", "éclair", 1500, t0 + timedelta(hours=2), False),
        ("F", "Zucchini", 0, t0 + timedelta(hours=2), True),
    ]:
        clock.current = at
        made[sku] = make.product(sku, name=name, price=price, active=active)
    clock.current = t0
    await store(uow_factory, *made.values())
    return uow_factory


async def _sorted(factory: UnitOfWorkFactory, f: ProductFilter, sort: ProductSort, limit: int) -> list[list[str]]:
    """The skus of every page, following the cursors."""
    pages: list[list[str]] = []
    after = None
    async with factory(readonly=True) as uow:
        while True:
            page = await uow.products.list(PageRequest(limit=limit, after=after), f, sort)
            versions = await uow.products.list_versions(PageRequest(limit=limit, after=after), f, sort)
            assert versions == Page([ProductVersion(p.id, p.version) for p in page.items], page.next_after)
            pages.append([p.sku for p in page.items])
            if page.next_after is None:
                return pages
            after = page.next_after


SORTED = {
    ProductSort.ID: "ABCDEF",
    ProductSort.PRICE: "FACBED",  # ties by id
    ProductSort.PRICE_DESC: "DEBCAF",  # the exact reverse
    ProductSort.NAME: "BCADFE",  # A-Z in either case; "é" after "z" (code points)
    ProductSort.NAME_DESC: "EFDACB",
    ProductSort.CREATED_AT: "DABCEF",
    ProductSort.CREATED_AT_DESC: "FECBAD",
}


@pytest.mark.parametrize("sort", list(ProductSort), ids=[s.value for s in ProductSort])
@pytest.mark.parametrize("limit", [1, 2, 4, 6])
async def test_every_sort_gives_one_total_order_page_after_page(
    sortable: UnitOfWorkFactory, sort: ProductSort, limit: int
) -> None:
    pages = await _sorted(sortable, ProductFilter(), sort, limit)
    assert "".join(sku for page in pages for sku in page) == SORTED[sort]
    assert [len(page) for page in pages] == [limit] * (6 // limit) + ([6 % limit] if 6 % limit else [])


@pytest.mark.parametrize("sort", list(ProductSort), ids=[s.value for s in ProductSort])
@pytest.mark.parametrize(
    ("product_filter", "keep"),
    [
        (ProductFilter(active=True), "ABCDF"),
        (ProductFilter(active=False), "E"),
        (ProductFilter(price_min=500, price_max=1500), "ABCE"),
        (ProductFilter(price_min=501), "BDE"),
        (ProductFilter(price_max=499), "F"),
        (ProductFilter(active=True, price_min=500, price_max=500), "AC"),
        (ProductFilter(text="apple"), "BC"),
        (ProductFilter(text="a"), "ABC"),  # words beginning with "a": apple, apple, and A's own sku
        (ProductFilter(text="apple", price_min=1000), "B"),
        (ProductFilter(text="nothing"), ""),
    ],
)
async def test_sorts_combine_with_search_and_filters(
    sortable: UnitOfWorkFactory, sort: ProductSort, product_filter: ProductFilter, keep: str
) -> None:
    expected = "".join(sku for sku in SORTED[sort] if sku in keep)
    for limit in (1, 2):
        pages = await _sorted(sortable, product_filter, sort, limit)
        assert "".join(sku for page in pages for sku in page) == expected, (limit, pages)


async def test_a_sorted_page_follows_changes_to_its_key(sortable: UnitOfWorkFactory, clock: FixedClock) -> None:
    # Keyset pages continue after the key where the last page ended, not after a position:
    # a product that moves past that point shows up further on, and nothing is repeated.
    async with sortable(readonly=True) as uow:
        first = await uow.products.list(PageRequest(limit=3), ProductFilter(), ProductSort.PRICE)
    assert [p.sku for p in first.items] == ["F", "A", "C"]
    async with sortable() as uow:
        cheap = await uow.products.get_by_sku("F")
        assert cheap is not None
        cheap.update({"price": Money(2000, "USD")}, at=clock.now())
        await uow.products.update(cheap)
        await uow.commit()
    async with sortable(readonly=True) as uow:
        rest = await uow.products.list(
            PageRequest(limit=10, after=first.next_after), ProductFilter(), ProductSort.PRICE
        )
    assert [p.sku for p in rest.items] == ["B", "E", "F", "D"]

"""`p`, the catalog in the console: each action through the catalog's use cases, asked first,
audited with source `console`, and what the store holds afterwards checked through the test's
own services; an edit of a product changed meanwhile is refused, never saved over it."""

from __future__ import annotations

from textual.widgets import Input

from core.domain.catalog import Product
from core.domain.errors import ProductNotFound
from core.domain.users import Actor
from core.ports.repositories import AuditFilter
from core.services.audit import ListAuditEntries
from core.services.catalog import AdjustStock, CreateProduct, ListProducts, UpdateProduct
from entrypoints.console.screens.products import ProductsScreen
from tests.console.conftest import Shop, on_every_store, running, signed_in, wait_for
from tests.console.driving import answer, fill, form_values, open_area, pressed_and_read, said, select

pytestmark = on_every_store

OPERATOR = Actor.operator()


async def add_product(shop: Shop, sku: str, name: str, price: int = 1250, stock: int = 10, **more: str) -> Product:
    return await shop.services.catalog.create_product(
        CreateProduct(actor=OPERATOR, sku=sku, name=name, price=price, stock=stock, **more)
    )


async def stored(shop: Shop, product_id: str) -> Product:
    return await shop.services.catalog.get_product(OPERATOR, product_id)


async def audited(shop: Shop, product_id: str) -> list[tuple[str, str | None, str | None]]:
    """(action, source, actor) of each entry about this product, oldest first."""
    page = await shop.services.audit.list_entries(
        ListAuditEntries(actor=OPERATOR, filter=AuditFilter(object_type="product", object_id=product_id))
    )
    return [(entry.action, entry.source_ip, entry.actor_id) for entry in reversed(page.items)]


async def test_the_list_shows_the_catalog_in_major_units(shop: Shop) -> None:
    await add_product(shop, "MUG-1", "Blue mug", price=123456, stock=7)
    async with running(shop.console()) as pilot:
        await signed_in(pilot, "staff@example.com")
        screen = await open_area(pilot, "p", ProductsScreen)
        row = screen.row(screen.items[0])
        assert list(row[:5]) == ["MUG-1", "Blue mug", "1,234.56 USD", 7, "yes"]


async def test_staff_create_a_product(shop: Shop) -> None:
    async with running(shop.console()) as pilot:
        await signed_in(pilot, "staff@example.com")
        screen = await open_area(pilot, "p", ProductsScreen)
        await pilot.press("+")
        await fill(
            pilot, {"sku": "TEA-1", "name": "Green tea", "description": "Loose leaf", "price": "4.5", "stock": "30"}
        )
        assert await answer(pilot) == "Create TEA-1 (Green tea) at 4.50 USD, stock 30?"
        await said(pilot, "Created TEA-1")
        await wait_for(pilot, lambda: [p.sku for p in screen.items] == ["TEA-1"], "the new product listed")
    page = await shop.services.catalog.list_products(ListProducts(actor=OPERATOR))
    [product] = page.items
    assert (product.sku, product.name, product.description, product.price.amount, product.stock, product.active) == (
        "TEA-1",
        "Green tea",
        "Loose leaf",
        450,
        30,
        True,
    )
    assert await audited(shop, product.id) == [("product.created", "console", shop.users["staff@example.com"])]


async def test_a_price_that_is_no_amount_creates_nothing(shop: Shop) -> None:
    async with running(shop.console()) as pilot:
        await signed_in(pilot, "staff@example.com")
        await open_area(pilot, "p", ProductsScreen)
        await pilot.press("+")
        await fill(pilot, {"sku": "TEA-1", "name": "Green tea", "price": "4.555"})
        assert "USD has 2 decimal places" in await said(pilot, "not created")
    assert (await shop.services.catalog.list_products(ListProducts(actor=OPERATOR))).items == []


async def test_a_refused_create_says_why_and_the_store_keeps_the_first(shop: Shop) -> None:
    first = await add_product(shop, "TEA-1", "Green tea")
    async with running(shop.console()) as pilot:
        await signed_in(pilot, "staff@example.com")
        await open_area(pilot, "p", ProductsScreen)
        await pilot.press("+")
        await fill(pilot, {"sku": "TEA-1", "name": "Other tea", "price": "1"})
        await answer(pilot)
        await said(pilot, "A product with sku 'TEA-1' already exists.")
    page = await shop.services.catalog.list_products(ListProducts(actor=OPERATOR))
    assert [(p.id, p.name) for p in page.items] == [(first.id, "Green tea")]


async def test_staff_edit_a_product_saved_on_the_version_they_opened(shop: Shop) -> None:
    product = await add_product(shop, "MUG-1", "Blue mug", price=1250)
    async with running(shop.console()) as pilot:
        await signed_in(pilot, "staff@example.com")
        screen = await open_area(pilot, "p", ProductsScreen)
        await select(pilot, screen, product.id)
        await pilot.press("e")
        assert await form_values(pilot) == {
            "sku": "MUG-1",
            "name": "Blue mug",
            "description": "",
            "price": "12.50 USD",
        }
        await fill(pilot, {"name": "Big blue mug", "price": "14"})
        assert await answer(pilot) == "Save MUG-1: name, price 12.50 USD -> 14.00 USD?"
        await said(pilot, "Saved MUG-1")
    now = await stored(shop, product.id)
    assert (now.name, now.price.amount, now.version) == ("Big blue mug", 1400, product.version + 1)
    staff = shop.users["staff@example.com"]
    assert await audited(shop, product.id) == [
        ("product.created", "cli", None),
        ("product.price_changed", "console", staff),
    ]


async def test_an_edit_of_a_product_changed_meanwhile_is_refused_and_shows_it_as_it_is_now(shop: Shop) -> None:
    product = await add_product(shop, "MUG-1", "Blue mug", price=1250)
    async with running(shop.console()) as pilot:
        await signed_in(pilot, "staff@example.com")
        screen = await open_area(pilot, "p", ProductsScreen)
        await select(pilot, screen, product.id)
        await pilot.press("e")
        await form_values(pilot)  # the form is open: someone changes the product through the API's use case
        await shop.services.catalog.update_product(
            UpdateProduct(actor=OPERATOR, product_id=product.id, name="Red mug", price=1500, expected_version=1)
        )
        await fill(pilot, {"name": "Big blue mug", "price": "14"})
        await answer(pilot)
        refusal = await said(pilot, "NOT saved")
        assert "MUG-1, Red mug, 15.00 USD, stock 10, active" in refusal
    now = await stored(shop, product.id)
    assert (now.name, now.price.amount, now.version) == ("Red mug", 1500, 2)  # the other change stays
    assert [a for a, source, _ in await audited(shop, product.id) if source == "console"] == []


async def test_staff_adjust_stock_with_a_reason(shop: Shop) -> None:
    product = await add_product(shop, "MUG-1", "Blue mug", stock=10)
    async with running(shop.console()) as pilot:
        await signed_in(pilot, "staff@example.com")
        screen = await open_area(pilot, "p", ProductsScreen)
        await select(pilot, screen, product.id)
        await pilot.press("s")
        await fill(pilot, {"delta": "-3", "reason": "broken in the shop"})
        assert await answer(pilot) == "Stock of MUG-1: -3 (10 -> 7)?"
        await said(pilot, "Stock of MUG-1 is 7")
        await wait_for(pilot, lambda: screen.items[0].stock == 7, "the list to show the new stock")
    assert (await stored(shop, product.id)).stock == 7
    page = await shop.services.audit.list_entries(
        ListAuditEntries(actor=OPERATOR, filter=AuditFilter(object_id=product.id, action="product.stock_adjusted"))
    )
    [entry] = page.items
    assert entry.source_ip == "console"
    assert entry.details == {"before": 10, "after": 7, "delta": -3, "reason": "broken in the shop"}


async def test_stock_below_zero_is_refused_and_the_stock_kept(shop: Shop) -> None:
    product = await add_product(shop, "MUG-1", "Blue mug", stock=2)
    async with running(shop.console()) as pilot:
        await signed_in(pilot, "staff@example.com")
        screen = await open_area(pilot, "p", ProductsScreen)
        await select(pilot, screen, product.id)
        await pilot.press("s")
        await fill(pilot, {"delta": "-3", "reason": "count"})
        await answer(pilot)
        assert "Not enough stock." in await said(pilot, "Stock: refused")
    assert (await stored(shop, product.id)).stock == 2


async def test_a_stock_change_not_confirmed_changes_nothing(shop: Shop) -> None:
    product = await add_product(shop, "MUG-1", "Blue mug", stock=2)
    async with running(shop.console()) as pilot:
        await signed_in(pilot, "staff@example.com")
        screen = await open_area(pilot, "p", ProductsScreen)
        await select(pilot, screen, product.id)
        await pilot.press("s")
        await fill(pilot, {"delta": "5"})
        await answer(pilot, yes=False)
        # A read after the answer: whatever the action did is done by then.
        await pressed_and_read(pilot, screen, "r")
    assert (await stored(shop, product.id)).stock == 2


async def test_staff_deactivate_a_product_and_activate_it_again(shop: Shop) -> None:
    product = await add_product(shop, "MUG-1", "Blue mug")
    async with running(shop.console()) as pilot:
        await signed_in(pilot, "staff@example.com")
        screen = await open_area(pilot, "p", ProductsScreen)
        await select(pilot, screen, product.id)
        await pilot.press("x")
        assert (await answer(pilot)).startswith("Deactivate MUG-1?")
        await said(pilot, "MUG-1 is inactive")
        await wait_for(pilot, lambda: screen.items[0].active is False, "the list to show it inactive")
        assert (await stored(shop, product.id)).active is False
        await pilot.press("x")
        assert (await answer(pilot)).startswith("Activate MUG-1 again?")
        await said(pilot, "MUG-1 is active")
    assert (await stored(shop, product.id)).active is True
    actions = [(action, source) for action, source, _ in await audited(shop, product.id)]
    assert actions[1:] == [("product.deactivated", "console"), ("product.activated", "console")]


async def test_staff_delete_a_product(shop: Shop) -> None:
    product = await add_product(shop, "MUG-1", "Blue mug")
    kept = await add_product(shop, "MUG-2", "Red mug")
    async with running(shop.console()) as pilot:
        await signed_in(pilot, "staff@example.com")
        screen = await open_area(pilot, "p", ProductsScreen)
        await select(pilot, screen, product.id)
        await pilot.press("D")
        assert (await answer(pilot)).startswith("Delete MUG-1 (Blue mug) for good?")
        await said(pilot, "Deleted MUG-1")
        await wait_for(pilot, lambda: [p.sku for p in screen.items] == ["MUG-2"], "the list without it")
    try:
        await stored(shop, product.id)
        raise AssertionError("the product is still in the store")
    except ProductNotFound:
        pass
    assert (await stored(shop, kept.id)).name == "Red mug"
    assert (await audited(shop, product.id))[-1] == ("product.deleted", "console", shop.users["staff@example.com"])


async def test_the_search_finds_products_by_words_as_the_api_does(shop: Shop) -> None:
    await add_product(shop, "MUG-1", "Blue ceramic mug")
    await add_product(shop, "TEA-1", "Green tea", description="Loose leaf from a mountain")
    hidden = await add_product(shop, "MUG-2", "Old ceramic mug")
    await shop.services.catalog.deactivate_product(OPERATOR, hidden.id)
    async with running(shop.console()) as pilot:
        await signed_in(pilot, "staff@example.com")
        screen = await open_area(pilot, "p", ProductsScreen)

        async def search(text: str) -> list[str]:
            await pilot.press("slash")
            screen.query_one("#filter", Input).value = text
            await pressed_and_read(pilot, screen, "enter")
            return sorted(p.sku for p in screen.items)

        assert await search("ceramic") == ["MUG-1", "MUG-2"]
        assert await search("mountain") == ["TEA-1"]
        assert await search("ceram active:no") == ["MUG-2"]
        assert await search("active:yes") == ["MUG-1", "TEA-1"]
        await pilot.press("slash")
        screen.query_one("#filter", Input).value = "active:maybe"
        await pilot.press("enter")
        await said(pilot, "active: is yes or no")


async def test_a_stock_change_made_elsewhere_shows_without_a_key(shop: Shop) -> None:
    product = await add_product(shop, "MUG-1", "Blue mug", stock=10)
    async with running(shop.console()) as pilot:
        await signed_in(pilot, "staff@example.com")
        screen = await open_area(pilot, "p", ProductsScreen)
        await shop.services.catalog.adjust_stock(AdjustStock(actor=OPERATOR, product_id=product.id, delta=5))
        await wait_for(pilot, lambda: screen.items[0].stock == 15, "the list to follow the store")

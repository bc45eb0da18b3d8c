"""``add_many`` of products, orders, payments and refunds: what ``add`` one after another
would store, read back the same way, in every adapter (see core/ports/repositories.py)."""

from __future__ import annotations

import pytest

from core.domain.errors import ProviderReferenceTaken, SkuTaken
from core.domain.orders import OrderStatus
from core.domain.pagination import PageRequest
from core.domain.payments import PaymentMethod, PaymentStatus, RefundStatus
from core.ports.repositories import ProductFilter
from core.ports.unit_of_work import UnitOfWorkFactory
from tests.contract.builders import Make, store


async def _skus(uow_factory: UnitOfWorkFactory, text: str | None = None) -> list[str]:
    async with uow_factory(readonly=True) as uow:
        page = await uow.products.list(PageRequest(limit=100), ProductFilter(text=text))
    return [p.sku for p in page.items]


async def test_products_added_together_read_back_exactly_and_are_found_by_their_words(
    uow_factory: UnitOfWorkFactory, make: Make
) -> None:
    products = [
        make.product("LAMP-1", name="Desk lamp", description="Brass, 40 cm.", price=4999, stock=3),
        make.product("CREME-2", name="Crème brûlée set", description="Two ramekins", price=0, stock=0, active=False),
        make.product("MUG-3", name="Mug", description="", price=1200, stock=1_000_000_000),
    ]
    async with uow_factory() as uow:
        await uow.products.add_many(products)
        await uow.products.add_many([])
        await uow.commit()

    async with uow_factory(readonly=True) as uow:
        assert [await uow.products.get(p.id) for p in products] == products
        assert await uow.products.get_by_sku("MUG-3") == products[2]
    assert await _skus(uow_factory) == ["LAMP-1", "CREME-2", "MUG-3"]
    assert await _skus(uow_factory, "creme ramek") == ["CREME-2"]
    assert await _skus(uow_factory, "brass") == ["LAMP-1"]
    assert await _skus(uow_factory, "mug-3") == ["MUG-3"]


@pytest.mark.parametrize("twice", [False, True], ids=["taken in the store", "twice in the list"])
async def test_a_taken_sku_is_sku_taken_and_nothing_is_kept_without_a_commit(
    uow_factory: UnitOfWorkFactory, make: Make, twice: bool
) -> None:
    await store(uow_factory, make.product("LAMP-1"))
    taken = "TEA-2" if twice else "LAMP-1"
    products = [make.product("TEA-1"), make.product("TEA-2"), make.product(taken), make.product("TEA-3")]
    async with uow_factory() as uow:
        with pytest.raises(SkuTaken) as caught:
            await uow.products.add_many(products)
    assert caught.value.details == {"sku": taken}
    assert await _skus(uow_factory) == ["LAMP-1"]


async def test_orders_added_together_read_back_exactly_with_their_lines_in_order(
    uow_factory: UnitOfWorkFactory, make: Make
) -> None:
    orders = [
        make.order(("ZED-9", 100, 1), ("ÄPFEL-1", 0, 1000), ("MUG-1", 1200, 2)),
        make.order(("LAMP-1", 5000, 1), status=OrderStatus.FULFILLED, amount_paid=5000, expires_in=None),
        make.order(customer_id="usr_000000000098", status=OrderStatus.EXPIRED),
    ]
    async with uow_factory() as uow:
        await uow.orders.add_many(orders)
        await uow.orders.add_many([])
        await uow.commit()

    async with uow_factory(readonly=True) as uow:
        assert [await uow.orders.get(o.id) for o in orders] == orders
        assert sorted(await uow.orders.get_many([o.id for o in orders]), key=lambda o: o.id) == orders


async def test_payments_and_refunds_added_together_read_back_exactly(
    uow_factory: UnitOfWorkFactory, make: Make
) -> None:
    order = make.order(("MUG-1", 1200, 2), status=OrderStatus.PAID, amount_paid=2400)
    await store(uow_factory, order)
    card = make.payment(order, amount=2000, status=PaymentStatus.REQUIRES_ACTION, provider_reference="pi_1")
    card.client_secret = "pi_1_secret_abc"
    card.next_action = {"type": "use_stripe_sdk", "n": [1, "two"]}
    cash = make.payment(order, amount=400, method=PaymentMethod.MANUAL)
    settled = make.payment(order, amount=2400, provider_reference="pi_2")
    refunds = [
        make.refund(cash, 400, status=RefundStatus.SUCCEEDED, reason="Chipped – sorry ✓"),
        make.refund(settled, 700, status=RefundStatus.FAILED),
        make.refund(settled, 1500),
    ]
    refunds[1].failure_code = "expired_or_canceled_card"
    async with uow_factory() as uow:
        await uow.payments.add_many([card, cash, settled])
        await uow.refunds.add_many(refunds)
        await uow.payments.add_many([])
        await uow.refunds.add_many([])
        await uow.commit()

    async with uow_factory(readonly=True) as uow:
        assert await uow.payments.list_for_order(order.id) == [card, cash, settled]
        assert await uow.payments.get_by_provider_reference("pi_1") == card
        assert await uow.refunds.list_for_order(order.id) == refunds
        assert await uow.refunds.list_for_payment(settled.id) == refunds[1:]


async def test_a_taken_provider_reference_is_refused(uow_factory: UnitOfWorkFactory, make: Make) -> None:
    order = make.order(status=OrderStatus.PAID, amount_paid=2400)
    first = make.payment(order, provider_reference="pi_1")
    await store(uow_factory, order, first)
    async with uow_factory() as uow:
        with pytest.raises(ProviderReferenceTaken) as caught:
            await uow.payments.add_many([make.payment(order), make.payment(order, provider_reference="pi_1")])
    assert caught.value.details == {"reference": "pi_1"}
    async with uow_factory(readonly=True) as uow:
        assert await uow.payments.list_for_order(order.id) == [first]

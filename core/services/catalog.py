"""The product catalog: create, read, list and search, update, stock, delete."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import attrs

from core.domain.catalog import (
    Product,
    check_description,
    check_name,
    check_price,
    check_sku,
    check_stock,
)
from core.domain.errors import ProductNotFound, SkuTaken, ValidationFailed
from core.domain.pagination import Page, PageRequest
from core.domain.users import Actor
from core.ports.clock import Clock, IdGenerator
from core.ports.repositories import ProductFilter, ProductSort, ProductVersion
from core.ports.unit_of_work import UnitOfWork, UnitOfWorkFactory
from core.services.access import as_staff, for_reading
from core.services.audit import Auditor

MAX_SEARCH_LENGTH = 200
#: The most products one import adds: one unit of work, so one transaction that holds the
#: store's writes (SQLite) or the rows it locks (PostgreSQL) for as long as it runs.
MAX_IMPORT = 10_000


@attrs.frozen
class CreateProduct:
    actor: Actor
    sku: str
    name: str
    price: int  # minor units of the store currency
    description: str = ""
    stock: int = 0
    active: bool = True
    currency: str | None = None  # if given, must be the store's


@attrs.frozen
class NewProduct:
    """One product of an import: what CreateProduct says of it, in the store's currency."""

    sku: str
    name: str
    price: int
    description: str = ""
    stock: int = 0
    active: bool = True


def _new_products(products: Sequence[NewProduct]) -> tuple[NewProduct, ...]:
    return tuple(products)


@attrs.frozen
class ImportProducts:
    actor: Actor
    products: tuple[NewProduct, ...] = attrs.field(converter=_new_products)


@attrs.frozen
class ProductsImported:
    created: int
    skipped: tuple[str, ...]  # the skus the catalog already had (or that came twice), as given


@attrs.frozen
class UpdateProduct:
    """Only the fields given (not None) change. ``expected_version`` comes from If-Match."""

    actor: Actor
    product_id: str
    expected_version: int | None = None
    sku: str | None = None
    name: str | None = None
    description: str | None = None
    price: int | None = None
    currency: str | None = None
    active: bool | None = None


@attrs.frozen
class AdjustStock:
    actor: Actor
    product_id: str
    delta: int
    reason: str | None = None
    expected_version: int | None = None


@attrs.frozen
class DeleteProduct:
    actor: Actor
    product_id: str
    expected_version: int | None = None


@attrs.frozen
class ListProducts:
    actor: Actor
    page: PageRequest = attrs.field(factory=PageRequest)
    text: str | None = None
    active: bool | None = None
    price_min: int | None = None
    price_max: int | None = None
    sort: ProductSort = ProductSort.ID  # creation order


def _may_be_slow(product_filter: ProductFilter) -> bool:
    """A text search, or a price range, may read much of the catalog for one page; the plain
    catalog, in its own order, reads the page and no more."""
    return (
        product_filter.text is not None or product_filter.price_min is not None or product_filter.price_max is not None
    )


class CatalogService:
    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, ids: IdGenerator, currency: str):
        self._uow = uow
        self._clock = clock
        self._ids = ids
        self._currency = currency
        self._auditor = Auditor(ids, clock)

    @property
    def currency(self) -> str:
        return self._currency

    async def create_product(self, cmd: CreateProduct) -> Product:
        actor = await as_staff(self._uow, cmd.actor)
        price = check_price(cmd.price, self._given_currency(cmd.currency), self._currency)
        now = self._clock.now()
        product = Product(
            id=self._ids.new("prd"),
            sku=check_sku(cmd.sku),
            name=check_name(cmd.name),
            description=check_description(cmd.description),
            price=price,
            stock=check_stock(cmd.stock),
            active=cmd.active,
            created_at=now,
            updated_at=now,
        )
        async with self._uow() as uow:
            if await uow.products.get_by_sku(product.sku) is not None:
                raise SkuTaken(product.sku)
            await uow.products.add(product)
            await self._audit(
                uow,
                actor,
                "product.created",
                product.id,
                {"sku": product.sku, "price": price.amount, "stock": product.stock},
            )
            await uow.commit()
        return product

    async def import_products(self, cmd: ImportProducts) -> ProductsImported:
        """Add many products in one unit of work: a demo catalog, or a catalog brought from
        another system. Staff only; at most MAX_IMPORT at a time (callers with more call
        again). Each product is checked as ``create_product`` checks it, and the first
        one that fails refuses the whole import (ValidationFailed names it:
        ``products[3].price``). A product whose sku the catalog has, or that an earlier
        product of the import has, is skipped and reported: an import run again adds only
        what is missing. The audit log gets one entry for the import (``product.imported``:
        how many, the first and last sku), not one per product."""
        actor = await as_staff(self._uow, cmd.actor)
        if len(cmd.products) > MAX_IMPORT:
            raise ValidationFailed({"products": f"at most {MAX_IMPORT} per import"})
        now = self._clock.now()
        products = [self._new_product(index, item, now) for index, item in enumerate(cmd.products)]
        skipped: list[str] = []
        async with self._uow() as uow:
            seen = {p.sku for p in await uow.products.get_many_by_sku([p.sku for p in products])}
            added: list[Product] = []
            for product in products:
                if product.sku in seen:
                    skipped.append(product.sku)
                    continue
                seen.add(product.sku)
                added.append(product)
            if added:
                await uow.products.add_many(added)
                details = {"created": len(added), "first_sku": added[0].sku, "last_sku": added[-1].sku}
                await self._auditor.record(uow, actor, "product.imported", "product", None, details)
                await uow.commit()
        return ProductsImported(created=len(added), skipped=tuple(skipped))

    def _new_product(self, index: int, item: NewProduct, now: datetime) -> Product:
        try:
            return Product(
                id=self._ids.new("prd"),
                sku=check_sku(item.sku),
                name=check_name(item.name),
                description=check_description(item.description),
                price=check_price(item.price, self._currency, self._currency),
                stock=check_stock(item.stock),
                active=item.active,
                created_at=now,
                updated_at=now,
            )
        except ValidationFailed as exc:
            fields = exc.details["fields"]
            raise ValidationFailed({f"products[{index}].{name}": problem for name, problem in fields.items()}) from None

    async def reader(self, actor: Actor) -> Actor:
        """The actor as the catalog sees them: one who claims staff powers (and so sees
        inactive products) is checked against the account as it is now. For an entry point
        that keeps what it rendered per kind of reader."""
        return await for_reading(self._uow, actor)

    async def get_product(self, actor: Actor, product_id: str) -> Product:
        """Customers and anonymous callers see active products only."""
        actor = await for_reading(self._uow, actor)
        async with self._uow(readonly=True) as uow:
            product = await uow.products.get(product_id)
        if product is None or (not product.active and not actor.is_staff):
            raise ProductNotFound(product_id)
        return product

    async def list_products(self, cmd: ListProducts) -> Page[Product]:
        """Everyone may list; only staff see (or filter for) inactive products. In the order
        ``cmd.sort`` says; ``cmd.page.after`` is a cursor of this same listing (InvalidCursor
        otherwise: another sort, other filters, or something that is no cursor)."""
        product_filter = self._filter(cmd, await for_reading(self._uow, cmd.actor))
        async with self._uow(readonly=True, slow=_may_be_slow(product_filter)) as uow:
            return await uow.products.list(cmd.page, product_filter, cmd.sort)

    async def list_product_versions(self, cmd: ListProducts) -> Page[ProductVersion]:
        """The ids and versions of the page ``list_products`` gives: for an entry point that
        keeps rendered copies of products and fetches only those that changed."""
        product_filter = self._filter(cmd, await for_reading(self._uow, cmd.actor))
        async with self._uow(readonly=True, slow=_may_be_slow(product_filter)) as uow:
            return await uow.products.list_versions(cmd.page, product_filter, cmd.sort)

    async def get_products(self, actor: Actor, product_ids: Sequence[str]) -> list[Product]:
        """The products among these ids that exist and that the actor may see."""
        actor = await for_reading(self._uow, actor)
        async with self._uow(readonly=True) as uow:
            products = await uow.products.get_many(product_ids)
        return [p for p in products if p.active or actor.is_staff]

    def _filter(self, cmd: ListProducts, actor: Actor) -> ProductFilter:
        """The repository filter for a listing."""
        active = cmd.active if actor.is_staff else True
        text = cmd.text.strip() if cmd.text is not None else None
        problems: dict[str, str] = {}
        if text is not None and len(text) > MAX_SEARCH_LENGTH:
            problems["q"] = f"must have at most {MAX_SEARCH_LENGTH} characters"
        if cmd.price_min is not None and cmd.price_max is not None and cmd.price_min > cmd.price_max:
            # A range that holds no price is a mistake (the two swapped), not a question
            # whose answer is an empty list.
            problems["price_min"] = "must not be greater than price_max"
            problems["price_max"] = "must not be less than price_min"
        if problems:
            raise ValidationFailed(problems)
        return ProductFilter(active=active, price_min=cmd.price_min, price_max=cmd.price_max, text=text or None)

    async def update_product(self, cmd: UpdateProduct) -> Product:
        actor = await as_staff(self._uow, cmd.actor)
        changes: dict[str, Any] = {}
        if cmd.sku is not None:
            changes["sku"] = check_sku(cmd.sku)
        if cmd.name is not None:
            changes["name"] = check_name(cmd.name)
        if cmd.description is not None:
            changes["description"] = check_description(cmd.description)
        if cmd.price is not None:
            changes["price"] = check_price(cmd.price, self._given_currency(cmd.currency), self._currency)
        elif cmd.currency is not None:
            check_price(0, cmd.currency, self._currency)
        if cmd.active is not None:
            changes["active"] = cmd.active
        async with self._uow() as uow:
            product = await self._get_for_update(uow, cmd.product_id, cmd.expected_version)
            new_sku = changes.get("sku", product.sku)
            if new_sku != product.sku and await uow.products.get_by_sku(new_sku) is not None:
                raise SkuTaken(new_sku)
            changed = product.update(changes, at=self._clock.now())
            if changed:
                await uow.products.update(product)
                if "price" in changed:
                    before, after = changed["price"]
                    await self._audit(
                        uow,
                        actor,
                        "product.price_changed",
                        product.id,
                        {"before": before.amount, "after": after.amount},
                    )
                if "active" in changed:
                    await self._audit(
                        uow, actor, "product.activated" if product.active else "product.deactivated", product.id, {}
                    )
                await uow.commit()
        return product

    async def deactivate_product(self, actor: Actor, product_id: str) -> Product:
        """Hide a product from customers without losing it (orders keep referring to it)."""
        return await self.update_product(UpdateProduct(actor=actor, product_id=product_id, active=False))

    async def adjust_stock(self, cmd: AdjustStock) -> Product:
        """Add or remove units; a delta that would take stock below zero is refused whole."""
        actor = await as_staff(self._uow, cmd.actor)
        if type(cmd.delta) is not int or cmd.delta == 0:
            raise ValidationFailed({"delta": "must be a non-zero integer"})
        async with self._uow() as uow:
            product = await self._get_for_update(uow, cmd.product_id, cmd.expected_version)
            before = product.stock
            product.adjust_stock(cmd.delta, at=self._clock.now())
            await uow.products.update(product)
            await self._audit(
                uow,
                actor,
                "product.stock_adjusted",
                product.id,
                {"before": before, "after": product.stock, "delta": cmd.delta, "reason": cmd.reason},
            )
            await uow.commit()
        return product

    async def delete_product(self, cmd: DeleteProduct) -> None:
        actor = await as_staff(self._uow, cmd.actor)
        async with self._uow() as uow:
            product = await self._get_for_update(uow, cmd.product_id, cmd.expected_version)
            await uow.products.delete(product.id)
            await self._audit(uow, actor, "product.deleted", product.id, {"sku": product.sku})
            await uow.commit()

    def _given_currency(self, currency: str | None) -> str:
        # Only None means "not given": an empty string was given and is not a currency.
        return self._currency if currency is None else currency

    async def _get_for_update(self, uow: UnitOfWork, product_id: str, expected_version: int | None) -> Product:
        product = await uow.products.get(product_id)
        if product is None:
            raise ProductNotFound(product_id)
        product.check_version(expected_version)
        return product

    async def _audit(
        self, uow: UnitOfWork, actor: Actor, action: str, product_id: str, details: dict[str, Any]
    ) -> None:
        await self._auditor.record(uow, actor, action, "product", product_id, details)

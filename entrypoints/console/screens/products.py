"""`p`, the catalog: the products the API lists, searched the way the API searches them, and
created, edited, restocked, deactivated and deleted through the same use cases.

An edit is saved only onto the product as it was when its form opened (the version the API
takes in If-Match): when it changed meanwhile, through the API or another console, nothing
is overwritten, and the console says so and shows the product as it is now."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from textual.binding import Binding, BindingType

from core.domain.catalog import Product
from core.domain.errors import PreconditionFailed
from core.domain.pagination import Page, PageRequest
from core.services.catalog import AdjustStock, CreateProduct, DeleteProduct, ListProducts, UpdateProduct
from entrypoints.console import money
from entrypoints.console.screens.common import ListScreen, action, confirmed, filled

_YES_NO = {"yes": True, "no": False}


def clip(text: str, width: int) -> str:
    """A cell that keeps the list within 80 columns: long names end in an ellipsis."""
    return text if len(text) <= width else text[: width - 1] + "…"


def whole_number(text: str, what: str) -> int:
    try:
        return int(text.strip().replace(",", ""))
    except ValueError:
        raise ValueError(f"{what}: type a whole number") from None


class ProductsScreen(ListScreen[Product]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("plus", "create", "New", key_display="+"),
        Binding("e", "edit", "Edit"),
        Binding("s", "adjust_stock", "Stock"),
        Binding("x", "toggle_active", "On/off"),
        Binding("D", "delete", "Delete", key_display="D"),
    ]

    TITLE = "Products"  # Screen.__init__ sets `title` from it (a class `title` is overwritten)
    columns = ("sku", "name", "price", "stock", "on", "updated")
    filter_hint = "words of name, sku, description; active:no"

    def __init__(self) -> None:
        super().__init__()
        self.text: str | None = None
        self.active: bool | None = None

    @property
    def currency(self) -> str:
        return self.console.require_services().catalog.currency

    # The list.
    def apply_filter(self, text: str) -> None:
        """Words go to the API's text search; ``active:yes`` or ``active:no`` to its flag."""
        words: list[str] = []
        active: bool | None = None
        for word in text.split():
            name, colon, value = word.partition(":")
            if colon and name.lower() == "active":
                if value.lower() not in _YES_NO:
                    raise ValueError("active: is yes or no")
                active = _YES_NO[value.lower()]
            else:
                words.append(word)
        super().apply_filter(text)
        self.text = " ".join(words) or None
        self.active = active

    async def fetch(self, page: PageRequest) -> Page[Product]:
        catalog = self.console.require_services().catalog
        return await catalog.list_products(
            ListProducts(actor=self.console.require_actor(), page=page, text=self.text, active=self.active)
        )

    def row(self, item: Product) -> Sequence[Any]:
        return (
            clip(item.sku, 14),
            clip(item.name, 18),
            money.show(item.price.amount, item.price.currency),
            item.stock,
            "yes" if item.active else "no",
            item.updated_at.strftime("%m-%d %H:%M"),
        )

    def key(self, item: Product) -> str:
        return item.id

    def open_item(self, item: Product) -> None:
        self.action_edit()

    # Actions.
    def action_create(self) -> None:
        action(self, self._create)

    def action_edit(self) -> None:
        action(self, self._edit)

    def action_adjust_stock(self) -> None:
        action(self, self._adjust_stock)

    def action_toggle_active(self) -> None:
        action(self, self._toggle_active)

    def action_delete(self) -> None:
        action(self, self._delete)

    async def _create(self) -> None:
        currency = self.currency
        values = await filled(
            self,
            "New product",
            [
                ("sku", "SKU", "", False),
                ("name", "Name", "", False),
                ("description", "Description", "", False),
                ("price", f"Price ({currency})", "", False),
                ("stock", "Stock", "0", False),
            ],
        )
        if values is None:
            return
        try:
            price = money.parse(values["price"], currency)
            stock = whole_number(values["stock"], "stock")
        except ValueError as problem:
            self.notify(str(problem), title="New product: not created", severity="error")
            return
        question = f"Create {values['sku']} ({values['name']}) at {money.show(price, currency)}, stock {stock}?"
        if not await confirmed(self, question):
            return
        command = CreateProduct(
            actor=self.console.require_actor(),
            sku=values["sku"].strip(),
            name=values["name"],
            description=values["description"],
            price=price,
            stock=stock,
        )
        product = await self.console.attempt(
            lambda: self.console.require_services().catalog.create_product(command), doing="New product"
        )
        if product is not None:
            self.notify(f"Created {product.sku}.")
            self.reload()

    async def _fresh(self) -> Product | None:
        """The product under the cursor as the store has it now (the list may be a moment old)."""
        item = self.current()
        if item is None:
            self.app.bell()
            return None
        actor = self.console.require_actor()
        return await self.console.attempt(
            lambda: self.console.require_services().catalog.get_product(actor, item.id), doing="Reading"
        )

    async def _edit(self) -> None:
        opened = await self._fresh()
        if opened is None:
            return
        currency = opened.price.currency
        values = await filled(
            self,
            f"Edit {opened.sku}",
            [
                ("sku", "SKU", opened.sku, False),
                ("name", "Name", opened.name, False),
                ("description", "Description", opened.description, False),
                ("price", f"Price ({currency})", money.show(opened.price.amount, currency), False),
            ],
        )
        if values is None:
            return
        try:
            price = money.parse(values["price"], currency)
        except ValueError as problem:
            self.notify(f"price: {problem}", title="Edit: not saved", severity="error")
            return
        changes: dict[str, Any] = {}
        if values["sku"].strip() != opened.sku:
            changes["sku"] = values["sku"].strip()
        if values["name"] != opened.name:
            changes["name"] = values["name"]
        if values["description"] != opened.description:
            changes["description"] = values["description"]
        if price != opened.price.amount:
            changes["price"] = price
        if not changes:
            self.notify("Nothing was changed.")
            return
        said = ", ".join(
            f"price {money.show(opened.price.amount, currency)} -> {money.show(price, currency)}"
            if name == "price"
            else name
            for name in changes
        )
        if not await confirmed(self, f"Save {opened.sku}: {said}?"):
            return
        command = UpdateProduct(
            actor=self.console.require_actor(), product_id=opened.id, expected_version=opened.version, **changes
        )
        product = await self.console.attempt(lambda: self._save(command), doing="Edit")
        if product is not None:
            self.notify(f"Saved {product.sku}.")
            self.reload()

    async def _save(self, command: UpdateProduct) -> Product | None:
        catalog = self.console.require_services().catalog
        try:
            return await catalog.update_product(command)
        except PreconditionFailed:
            now = await catalog.get_product(command.actor, command.product_id)
            self.notify(
                f"It was changed while you edited it; it is now: {now.sku}, {now.name},"
                f" {money.show(now.price.amount, now.price.currency)}, stock {now.stock},"
                f" {'active' if now.active else 'inactive'}. Edit it again to change it.",
                title="Edit: NOT saved",
                severity="error",
                timeout=15,
            )
            self.reload()
            return None

    async def _adjust_stock(self) -> None:
        product = await self._fresh()
        if product is None:
            return
        values = await filled(
            self,
            f"Stock of {product.sku}: {product.stock}",
            [("delta", "Add (or -remove)", "", False), ("reason", "Reason", "", False)],
        )
        if values is None:
            return
        try:
            delta = whole_number(values["delta"], "add")
        except ValueError as problem:
            self.notify(str(problem), title="Stock: not changed", severity="error")
            return
        reason = values["reason"].strip() or None
        question = f"Stock of {product.sku}: {delta:+d} ({product.stock} -> {product.stock + delta})?"
        if not await confirmed(self, question):
            return
        # A delta adds to whatever the stock is by then: no version to match.
        command = AdjustStock(actor=self.console.require_actor(), product_id=product.id, delta=delta, reason=reason)
        changed = await self.console.attempt(
            lambda: self.console.require_services().catalog.adjust_stock(command), doing="Stock"
        )
        if changed is not None:
            self.notify(f"Stock of {changed.sku} is {changed.stock}.")
            self.reload()

    async def _toggle_active(self) -> None:
        product = await self._fresh()
        if product is None:
            return
        if product.active:
            question = f"Deactivate {product.sku}? Customers no longer see it; orders keep it."
        else:
            question = f"Activate {product.sku} again? Customers see it."
        if not await confirmed(self, question):
            return
        command = UpdateProduct(
            actor=self.console.require_actor(),
            product_id=product.id,
            expected_version=product.version,
            active=not product.active,
        )
        changed = await self.console.attempt(
            lambda: self.console.require_services().catalog.update_product(command),
            doing="Deactivate" if product.active else "Activate",
        )
        if changed is not None:
            self.notify(f"{changed.sku} is {'active' if changed.active else 'inactive'}.")
            self.reload()

    async def _delete(self) -> None:
        product = await self._fresh()
        if product is None:
            return
        if not await confirmed(self, f"Delete {product.sku} ({product.name}) for good? (x only hides it)"):
            return
        # What was asked about is what is deleted: not a version changed since.
        command = DeleteProduct(
            actor=self.console.require_actor(), product_id=product.id, expected_version=product.version
        )
        if await self.console.attempt(lambda: self._deleted(command), doing="Delete"):
            self.notify(f"Deleted {product.sku}.")
            self.reload()

    async def _deleted(self, command: DeleteProduct) -> bool:
        await self.console.require_services().catalog.delete_product(command)
        return True

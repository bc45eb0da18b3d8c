"""`o`, orders: every order, newest first, filtered by status and customer or found by id;
Enter opens one (its lines, payments, refunds and audit trail), where staff fulfil, cancel,
record a manual payment or refund it, through the services the API's routes call.

The filter reads words: a status (`paid` or `status:paid`; also `pending` and
`part_refunded`, as the list shows them), a customer (`customer:usr_...`, or `customer:`
and an email, which admins may look up), or an order's id (`ord_...`, which opens that
order). Amounts are typed in the currency's major unit (12.50).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, ClassVar, TypeVar

import attrs
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Footer, Static

from core.domain.audit import AuditEntry
from core.domain.errors import (
    AmountExceedsBalance,
    DomainError,
    Invalid,
    NotAllowed,
    NotFound,
    RefundExceedsCaptured,
)
from core.domain.orders import Order, OrderStatus
from core.domain.pagination import Page, PageRequest
from core.domain.payments import Payment, PaymentMethod, Refund, RefundStatus
from core.ports.repositories import AuditFilter
from core.services.audit import ListAuditEntries
from core.services.orders import CancelOrder, FulfilOrder, ListOrders
from core.services.payments import PayOrder, RefundPayment
from entrypoints.console import money
from entrypoints.console.screens.common import ConsoleScreen, ListScreen, StoreChanged, action, confirmed, filled

T = TypeVar("T")

ORDER_PREFIX = "ord_"
USER_PREFIX = "usr_"
#: The newest entries of an order's audit trail that its screen shows.
AUDIT_SHOWN = 20
#: How the list shows the two long statuses, to fit 80 columns; the filter reads these too.
SHOWN_STATUS = {OrderStatus.PENDING_PAYMENT: "pending", OrderStatus.PARTIALLY_REFUNDED: "part_refunded"}
STATUS_WORDS = {status.value: status for status in OrderStatus} | {w: s for s, w in SHOWN_STATUS.items()}
STATUSES = ", ".join(status.value for status in OrderStatus)
FILTER_HELP = f"type a status ({STATUSES}), customer:<usr_... or email> or an order id (ord_...)"


@attrs.frozen
class OrderQuery:
    """What the filter asks for: one order by id, or orders by status and customer."""

    order_id: str | None = None
    status: OrderStatus | None = None
    customer_id: str | None = None
    customer_email: str | None = None  # looked up (by an admin) before the orders are read


def parse_filter(text: str) -> OrderQuery:
    """The filter's words as a query; ValueError, saying what to type instead, otherwise."""
    found: dict[str, Any] = {}

    def put(name: str, value: Any, word: str) -> None:
        taken = "customer" if name.startswith("customer") else name
        if any(key.startswith(taken) for key in found):
            raise ValueError(f"{word!r}: only one {taken.replace('_', ' ')} at a time")
        found[name] = value

    for word in text.split():
        kind, _, value = word.partition(":") if ":" in word else ("", "", word)
        kind = kind.lower()
        if kind == "status" or (not kind and value.lower() in STATUS_WORDS):
            if value.lower() not in STATUS_WORDS:
                raise ValueError(f"{word!r}: the statuses are {STATUSES}")
            put("status", STATUS_WORDS[value.lower()], word)
        elif kind == "customer" or (not kind and (value.startswith(USER_PREFIX) or "@" in value)):
            if value.startswith(USER_PREFIX):
                put("customer_id", value, word)
            elif "@" in value:
                put("customer_email", value, word)
            else:
                raise ValueError(f"{word!r}: name the customer by account id (usr_...) or email")
        elif kind in ("id", "order") or (not kind and value.startswith(ORDER_PREFIX)):
            if not value.startswith(ORDER_PREFIX):
                raise ValueError(f"{word!r}: an order id begins with {ORDER_PREFIX}")
            put("order_id", value, word)
        else:
            raise ValueError(f"{word!r} is not understood: {FILTER_HELP}")
    if "order_id" in found and len(found) > 1:
        raise ValueError("an order id stands alone: it names one order")
    return OrderQuery(**found)


def short_id(identifier: str) -> str:
    """An id as a list shows it, to fit 80 columns: its last characters (the random part of
    the store's ids, telling orders made in the same millisecond apart); the order's screen
    shows it whole."""
    return "…" + identifier[-6:] if len(identifier) > 7 else identifier


def plain_amount(value: int, currency: str) -> str:
    """An amount in major units without its currency, for columns the title names it for."""
    return money.show(value, currency).removesuffix(f" {currency}")


def when(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M")


class OrdersScreen(ListScreen[Order]):
    TITLE = "Orders, newest first"
    columns = ("id", "status", "customer", "total", "paid", "refunded", "placed at")
    filter_hint = "/ status (paid), customer:<id or email>, ord_..."

    def __init__(self) -> None:
        super().__init__()
        self.query_of_filter = OrderQuery()
        self._customer_found: str | None = None  # the account the filter's email named
        self._refused = False  # the filter's order or email was refused, and staff were told
        self._open_when_read: str | None = None

    def on_mount(self) -> None:
        super().on_mount()
        # Seven columns fit 80 only with the store's one currency said once, here.
        currency = self.console.require_services().settings["store"]["currency"]
        self.query_one(".title", Static).update(f"{self.TITLE} (amounts in {currency})")

    def apply_filter(self, text: str) -> None:
        query = parse_filter(text)
        self.filter_text = text
        self.query_of_filter = query
        self._customer_found = None
        self._refused = False
        self._open_when_read = query.order_id

    async def fetch(self, page: PageRequest) -> Page[Order]:
        query = self.query_of_filter
        try:
            if query.order_id is not None:
                return await self._one_order(query.order_id)
            customer_id = query.customer_id
            if query.customer_email is not None:
                customer_id = await self._customer_of(query.customer_email)
        except (NotFound, NotAllowed) as refused:
            # Nothing matches: the list empties, and staff are told why once (not again at
            # each live reload).
            if not self._refused:
                from entrypoints.console.app import describe

                self._refused = True
                self.notify(describe(refused), title="Filter", severity="error", timeout=8, markup=False)
            return Page([], None)
        services, actor = self.console.require_services(), self.console.require_actor()
        return await services.orders.list_orders(
            ListOrders(actor=actor, page=page, status=query.status, customer_id=customer_id)
        )

    async def _one_order(self, order_id: str) -> Page[Order]:
        order = await self.console.require_services().orders.get_order(self.console.require_actor(), order_id)
        if self._open_when_read == order.id:
            self._open_when_read = None
            self.app.call_later(self.open_item, order)
        return Page([order], None)

    async def _customer_of(self, email: str) -> str:
        if self._customer_found is None:
            services, actor = self.console.require_services(), self.console.require_actor()
            self._customer_found = (await services.auth.get_user_by_email(actor, email)).id
        return self._customer_found

    def row(self, order: Order) -> Sequence[Any]:
        currency = order.currency
        return (
            short_id(order.id),
            SHOWN_STATUS.get(order.status, order.status.value),
            short_id(order.customer_id),
            plain_amount(order.total.amount, currency),
            plain_amount(order.amount_paid, currency),
            plain_amount(order.amount_refunded, currency),
            when(order.created_at),
        )

    def key(self, order: Order) -> str:
        return order.id

    def open_item(self, order: Order) -> None:
        self.app.push_screen(OrderScreen(order.id))


class OrderScreen(ConsoleScreen[None]):
    """One order, read again whenever the store changes; the actions ask before they act."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f", "fulfil", "Fulfil"),
        Binding("C", "cancel_order", "Cancel", key_display="C"),
        Binding("m", "pay", "Pay"),
        Binding("R,x", "refund", "Refund", key_display="x"),
        Binding("r", "reload", "Reload", show=False),
    ]
    DEFAULT_CSS = """
    OrderScreen #body { height: 1fr; padding: 0 1; }
    """

    def __init__(self, order_id: str):
        super().__init__()
        self.order_id = order_id
        self.order: Order | None = None
        self.payments: list[Payment] = []
        self.refunds: list[Refund] = []
        self.audit_entries: list[AuditEntry] = []
        self.audit_note: str | None = None  # why the audit trail is not shown
        self.loads = 0  # completed reads: tests wait on it
        self.actions_done = 0  # finished actions, whatever their outcome: tests wait on it

    def compose(self) -> ComposeResult:
        yield Static(f"Order {self.order_id}", classes="title", markup=False)
        with VerticalScroll(id="body"):
            yield Static("Reading...", id="detail", markup=False)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.reload()

    def on_store_changed(self, _: StoreChanged) -> None:
        self.reload()

    def action_reload(self) -> None:
        self.reload()

    def reload(self) -> None:
        self.run_worker(self._load(), group="load", exclusive=True, exit_on_error=False)

    async def _load(self) -> None:
        read = await self.console.attempt(self._read, doing="Reading the order")
        if read is not None:
            self.order, self.payments, self.refunds = read
            await self._read_audit()
            self.query_one("#detail", Static).update(self.text())
        self.loads += 1

    async def _read(self) -> tuple[Order, list[Payment], list[Refund]]:
        services, actor = self.console.require_services(), self.console.require_actor()
        order = await services.orders.get_order(actor, self.order_id)
        payments = await services.payments.list_payments(actor, self.order_id)
        refunds = await services.payments.list_refunds(actor, self.order_id)
        return order, payments, refunds

    async def _read_audit(self) -> None:
        services, actor = self.console.require_services(), self.console.require_actor()
        try:
            page = await services.audit.list_entries(
                ListAuditEntries(
                    actor=actor, page=PageRequest(limit=AUDIT_SHOWN), filter=AuditFilter(object_id=self.order_id)
                )
            )
        except NotAllowed:  # the audit log is the admins'
            self.audit_entries, self.audit_note = [], "audit trail: admins only"
        except DomainError as error:
            self.audit_entries, self.audit_note = [], f"audit trail: {error.message}"
        else:
            self.audit_entries, self.audit_note = list(page.items), None

    def text(self) -> str:
        order = self.order
        assert order is not None
        currency = order.currency

        def show(amount: int) -> str:
            return money.show(amount, currency)

        out = [
            f"Status {order.status.value}    customer {order.customer_id}",
            f"Placed {when(order.created_at)}    updated {when(order.updated_at)}",
            "",
            f"{'sku':<14} {'name':<22} {'qty':>4} {'unit price':>15} {'line total':>15}",
        ]
        out += [
            f"{line.sku:<14.14} {line.name:<22.22} {line.quantity:>4} "
            f"{show(line.unit_price.amount):>15} {show(line.line_total.amount):>15}"
            for line in order.lines
        ]
        out += [
            "",
            f"Total {show(order.total.amount)}   paid {show(order.amount_paid)}   "
            f"refunded {show(order.amount_refunded)}   due {show(order.balance_due)}",
            "",
            "Payments" if self.payments else "Payments: none",
        ]
        out += [
            f"  {p.id}  {p.method.value} {p.status.value}  {show(p.amount.amount)}\n    {when(p.created_at)}"
            + (f"  reference {p.reference}" if p.reference else "")
            + (f"  failed: {p.failure_code}" if p.failure_code else "")
            for p in self.payments
        ]
        out += ["", "Refunds" if self.refunds else "Refunds: none"]
        out += [
            f"  {r.id}  {r.status.value}  {show(r.amount.amount)}\n    {when(r.created_at)}  reason {r.reason}"
            + (f"  failed: {r.failure_code}" if r.failure_code else "")
            for r in self.refunds
        ]
        out.append("")
        if self.audit_note is not None:
            out.append(self.audit_note)
        else:
            out.append("Audit trail (newest first)" if self.audit_entries else "Audit trail: nothing yet")
            out += [
                f"  {when(e.at)}  {e.action:<26} {short_id(e.actor_id) if e.actor_id else 'operator':<8}"
                f" {e.source_ip or '?'}"
                for e in self.audit_entries
            ]
        return "\n".join(out)

    # Actions.
    def action_fulfil(self) -> None:
        action(self, lambda: self._act(self._fulfil))

    def action_cancel_order(self) -> None:
        action(self, lambda: self._act(self._cancel))

    def action_pay(self) -> None:
        action(self, lambda: self._act(self._pay))

    def action_refund(self) -> None:
        action(self, lambda: self._act(self._refund))

    async def _act(self, work: Callable[[Order], Awaitable[None]]) -> None:
        try:
            if self.order is not None:
                await work(self.order)
        finally:
            self.actions_done += 1

    async def _attempt(self, work: Callable[[], Awaitable[T]], doing: str, done: str) -> None:
        """Run the change; say it is done and show the order as it now stands."""
        if await self.console.attempt(work, doing=doing) is not None:
            self.notify(done, title=doing)
        await self._load()

    async def _fulfil(self, order: Order) -> None:
        if not await confirmed(self, f"Mark {order.id} fulfilled?"):
            return

        async def fulfil() -> Order:
            services, actor = self.console.require_services(), self.console.require_actor()
            return await services.orders.fulfil_order(FulfilOrder(actor=actor, order_id=order.id))

        await self._attempt(fulfil, "Fulfilling", "The order is fulfilled.")

    async def _cancel(self, order: Order) -> None:
        values = await filled(self, f"Cancel {order.id}", [("reason", "Reason (optional)", "", False)])
        if values is None:
            return
        reason = values["reason"].strip() or None
        handback = f" {money.show(order.amount_paid, order.currency)} paid goes back." if order.amount_paid else ""
        if not await confirmed(self, f"Cancel {order.id}?{handback}"):
            return

        async def cancel() -> Order:
            services, actor = self.console.require_services(), self.console.require_actor()
            return await services.orders.cancel_order(CancelOrder(actor=actor, order_id=order.id, reason=reason))

        await self._attempt(cancel, "Cancelling", "The order is cancelled.")

    async def _pay(self, order: Order) -> None:
        currency = order.currency
        if order.balance_due == 0:
            self.notify("Nothing is due on this order.", title="Recording a payment", severity="warning")
            return
        values = await filled(
            self,
            f"Manual payment of {order.id}",
            [
                ("amount", f"Amount ({currency})", money.show(order.balance_due, currency), False),
                ("reference", "Reference (receipt, transfer)", "", False),
            ],
        )
        if values is None:
            return
        amount = self._amount(values["amount"], currency, "Payment")
        if amount is None:
            return
        reference = values["reference"]
        if not await confirmed(self, f"Record {money.show(amount, currency)} paid on {order.id}?"):
            return

        async def pay() -> Payment:
            services, actor = self.console.require_services(), self.console.require_actor()
            command = PayOrder(
                actor=actor, order_id=order.id, method=PaymentMethod.MANUAL, reference=reference, amount=amount
            )
            try:
                return await services.payments.pay(command)
            except AmountExceedsBalance as refused:
                left = money.show(refused.details["remaining"], currency)
                raise Invalid(f"The order owes {left}; a payment cannot exceed it.", code=refused.code) from refused

        await self._attempt(pay, "Recording a payment", "The payment is recorded.")

    async def _refund(self, order: Order) -> None:
        currency = order.currency

        async def refundable() -> int:
            services, actor = self.console.require_services(), self.console.require_actor()
            return await services.payments.refundable(actor, order.id)

        left = await self.console.attempt(refundable, doing="Refunding")
        if left is None:
            return
        if left == 0:
            self.notify("Nothing is left to refund on this order.", title="Refunding", severity="warning")
            return
        values = await filled(
            self,
            f"Refund of {order.id}",
            [
                (
                    "amount",
                    f"Amount ({currency}; at most {money.show(left, currency)})",
                    money.show(left, currency),
                    False,
                ),
                ("reason", "Reason", "", False),
            ],
        )
        if values is None:
            return
        amount = self._amount(values["amount"], currency, "Refund")
        if amount is None:
            return
        reason = values["reason"]
        if not await confirmed(self, f"Refund {money.show(amount, currency)} of {order.id}?"):
            return

        async def refund() -> list[Refund]:
            services, actor = self.console.require_services(), self.console.require_actor()
            command = RefundPayment(actor=actor, order_id=order.id, reason=reason, amount=amount)
            try:
                return await services.payments.refund(command)
            except RefundExceedsCaptured as refused:
                most = money.show(refused.details["refundable"], currency)
                raise Invalid(f"At most {most} can still be refunded.", code=refused.code) from refused

        made = await self.console.attempt(refund, doing="Refunding")
        if made is not None:
            pending = any(r.status is RefundStatus.PENDING for r in made)
            # Pending: the provider has not answered yet; the refund keeps its reservation.
            self.notify(
                "The refund is pending with the provider." if pending else "The refund is made.", title="Refund"
            )
        await self._load()

    def _amount(self, text: str, currency: str, doing: str) -> int | None:
        try:
            return money.parse(text, currency)
        except ValueError as problem:
            self.notify(f"Amount: {problem}", title=doing, severity="error", markup=False)
            return None

"""Orders, their payments and refunds: /api/v1/orders/*."""

from __future__ import annotations

from aiohttp import web

from adapters.serialization import command, to_json, to_wire
from core.domain.orders import Order, OrderStatus
from core.domain.pagination import PageRequest
from core.domain.payments import RefundStatus
from core.services.orders import CancelOrder, FulfilOrder, ListOrders, PlaceOrder
from core.services.payments import PayOrder, RefundPayment
from entrypoints.http.api import Api, Input, Param, Reply, json_response, list_response
from entrypoints.http.keys import ORDERS, PAYMENTS, RENDERED_PAGES, STORE
from entrypoints.http.routes.common import (
    BODY_ERRORS,
    FORBIDDEN,
    LIST_ERRORS,
    NOT_FOUND,
    PAGE,
    UNAUTHENTICATED,
    err,
)
from entrypoints.http.schemas import CANCEL_ORDER, FULFIL_ORDER, PAY, PLACE_ORDER, REFUND, USER_ID, list_of, ref

api = Api()

WRONG_STATE = err(409, "Not possible in the order's current status (`invalid_order_state`, `details.status`).")
UNAVAILABLE = err(503, "The payment provider cannot be reached (`payment_provider_unavailable`); see Retry-After.")
STATUSES = [s.value for s in OrderStatus]


def _order_response(order: Order, status: int = 200) -> web.Response:
    return json_response(to_wire(order), status=status, headers={"Location": f"/api/v1/orders/{order.id}"})


@api.operation(
    "POST",
    "/api/v1/orders",
    summary="Place an order",
    tag="orders",
    auth="user",
    scope="orders:write",
    body=PLACE_ORDER,
    replies=(
        Reply(201, "The order, with stock reserved for every line.", ref("Order"), ("Location",)),
        UNAUTHENTICATED,
        err(409, "Not enough stock (`insufficient_stock`; `details.lines` lists every short line)."),
        *BODY_ERRORS,
    ),
)
async def place_order(request: web.Request, i: Input) -> web.Response:
    """Each line names a product by `product_id` or `sku`. Stock for every line is reserved
    at once, or nothing is; prices are the catalog's now. Unpaid orders expire (default 30 min)."""
    order = await request.app[ORDERS].place_order(command(PlaceOrder, i.body, actor=i.actor))
    return _order_response(order, status=201)


@api.operation(
    "GET",
    "/api/v1/orders",
    summary="List orders",
    tag="orders",
    auth="user",
    scope="orders:read",
    query=(
        *PAGE,
        Param("status", {"type": "string", "enum": STATUSES}, "Only orders in this status."),
        Param("customer_id", USER_ID, "Staff only: one customer's orders."),
    ),
    replies=(Reply(200, "A page of orders, newest first.", list_of("Order")), UNAUTHENTICATED, *LIST_ERRORS),
)
async def list_orders(request: web.Request, i: Input) -> web.Response:
    """Customers see their own orders; staff see everyone's."""
    q = i.query
    page = await request.app[ORDERS].list_orders(
        ListOrders(
            actor=i.actor,
            page=PageRequest(limit=q["limit"], after=q.get("cursor")),
            status=OrderStatus(q["status"]) if "status" in q else None,
            customer_id=q.get("customer_id"),
        )
    )
    return list_response(to_wire(page.items), page.next_after)


@api.operation(
    "GET",
    "/api/v1/orders/{order_id}",
    summary="One order",
    tag="orders",
    auth="user",
    scope="orders:read",
    replies=(Reply(200, "The order.", ref("Order")), UNAUTHENTICATED, NOT_FOUND),
)
async def get_order(request: web.Request, i: Input) -> web.Response:
    """Another customer's order is a 404, like one that does not exist."""
    order_id = request.match_info["order_id"]
    # Rendered once per store version and per caller (what one may see, another may not).
    version = request.app[STORE].change_counter()
    key = ("order", order_id, i.actor.user_id)
    pages = request.app[RENDERED_PAGES]
    body = pages.get(key, version)
    if body is None:
        body = to_json(to_wire(await request.app[ORDERS].get_order(i.actor, order_id)))
        pages.put(key, version, body)
    return web.Response(body=body, content_type="application/json")


@api.operation(
    "POST",
    "/api/v1/orders/{order_id}/cancel",
    summary="Cancel an order",
    tag="orders",
    auth="user",
    scope="orders:write",
    body=CANCEL_ORDER,
    replies=(
        Reply(200, "The cancelled order.", ref("Order")),
        UNAUTHENTICATED,
        NOT_FOUND,
        WRONG_STATE,
        UNAVAILABLE,
        *BODY_ERRORS,
    ),
)
async def cancel_order(request: web.Request, i: Input) -> web.Response:
    """Releases the reserved stock and refunds whatever was paid. A fulfilled order cannot be cancelled."""
    order = await request.app[ORDERS].cancel_order(
        command(CancelOrder, i.body, actor=i.actor, order_id=request.match_info["order_id"])
    )
    return json_response(to_wire(order))


@api.operation(
    "POST",
    "/api/v1/orders/{order_id}/fulfil",
    summary="Mark a paid order fulfilled",
    tag="orders",
    auth="staff",
    scope="orders:write",
    body=FULFIL_ORDER,
    replies=(
        Reply(200, "The fulfilled order.", ref("Order")),
        UNAUTHENTICATED,
        FORBIDDEN,
        NOT_FOUND,
        WRONG_STATE,
        *BODY_ERRORS,
    ),
)
async def fulfil_order(request: web.Request, i: Input) -> web.Response:
    order = await request.app[ORDERS].fulfil_order(FulfilOrder(actor=i.actor, order_id=request.match_info["order_id"]))
    return json_response(to_wire(order))


@api.operation(
    "POST",
    "/api/v1/orders/{order_id}/payments",
    summary="Pay an order (card) or record a payment (manual)",
    tag="payments",
    auth="user",
    scope="payments:write",
    body=PAY,
    rerun_when_unavailable=True,  # a retry reuses the saved payment and its Stripe key: never two charges
    replies=(
        Reply(
            201,
            "The payment: `succeeded`, or `requires_action` with `client_secret` and `next_action`.",
            ref("Payment"),
        ),
        err(402, "The card was declined (`payment_failed`; `details.decline_code`)."),
        UNAUTHENTICATED,
        FORBIDDEN,
        NOT_FOUND,
        WRONG_STATE,
        UNAVAILABLE,
        *BODY_ERRORS,
    ),
)
async def pay_order(request: web.Request, i: Input) -> web.Response:
    """`{"method": "card", "payment_method": "pm_..."}` charges the balance due through Stripe.
    `{"method": "manual", "reference": "...", "amount"?}` (staff) records cash, a bank transfer or an
    invoice; partial manual payments add up until the order is paid."""
    payment = await request.app[PAYMENTS].pay(
        command(PayOrder, i.body, actor=i.actor, order_id=request.match_info["order_id"])
    )
    return json_response(to_wire(payment), status=201)


@api.operation(
    "GET",
    "/api/v1/orders/{order_id}/payments",
    summary="An order's payments",
    tag="payments",
    auth="user",
    scope="orders:read",
    replies=(Reply(200, "Every payment of the order, oldest first.", list_of("Payment")), UNAUTHENTICATED, NOT_FOUND),
)
async def list_payments(request: web.Request, i: Input) -> web.Response:
    payments = await request.app[PAYMENTS].list_payments(i.actor, request.match_info["order_id"])
    return list_response(to_wire(payments), None)


@api.operation(
    "POST",
    "/api/v1/orders/{order_id}/refunds",
    summary="Refund an order",
    tag="payments",
    auth="staff",
    scope="refunds:write",
    body=REFUND,
    replies=(
        Reply(201, "The refund, and every refund the request made in `refunds`.", ref("RefundCreated")),
        Reply(
            202,
            "Accepted but pending (the provider was unreachable or has not finished): it still counts "
            "against what can be refunded and is settled by the provider's webhook or sent again by the server.",
            ref("RefundCreated"),
        ),
        UNAUTHENTICATED,
        FORBIDDEN,
        NOT_FOUND,
        WRONG_STATE,
        UNAVAILABLE,
        *BODY_ERRORS,
    ),
)
async def refund_order(request: web.Request, i: Input) -> web.Response:
    """`amount` defaults to all that is still refundable; more than that is refused
    (`refund_exceeds_captured`), also when several refunds race."""
    refunds = await request.app[PAYMENTS].refund(
        command(RefundPayment, i.body, actor=i.actor, order_id=request.match_info["order_id"])
    )
    made = to_wire(refunds)
    # 202: accepted, not done: the provider could not be reached or has not finished; the
    # refund keeps its reservation and is settled by the provider's webhook or sent again
    # by the server's housekeeping.
    status = 202 if any(r.status is RefundStatus.PENDING for r in refunds) else 201
    return json_response({**made[0], "refunds": made}, status=status)


@api.operation(
    "GET",
    "/api/v1/orders/{order_id}/refunds",
    summary="An order's refunds",
    tag="payments",
    auth="user",
    scope="orders:read",
    replies=(Reply(200, "Every refund of the order, oldest first.", list_of("Refund")), UNAUTHENTICATED, NOT_FOUND),
)
async def list_refunds(request: web.Request, i: Input) -> web.Response:
    refunds = await request.app[PAYMENTS].list_refunds(i.actor, request.match_info["order_id"])
    return list_response(to_wire(refunds), None)

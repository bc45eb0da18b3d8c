"""Orders and their lines, payments, refunds, the outbox and the provider events seen.

The same conventions as migration 1: STRICT tables, CHECK constraints that repeat the
domain's rules, an index for every query of repositories.py (tests/integration checks
the plans), lists keyset-paginated by id.

Order lines keep the product's id without a foreign key: the sku, name and unit price
on the line are the record, and deleting a product must not touch the orders that sold
it. Orders keep their customer's id without one for the same reason as the audit log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when a migration runs, not at every start
    import sqlite_utils

STATEMENTS = (
    """
    CREATE TABLE orders (
        id TEXT PRIMARY KEY,
        customer_id TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN (
            'pending_payment', 'paid', 'fulfilled', 'cancelled', 'expired', 'partially_refunded', 'refunded'
        )),
        subtotal INTEGER NOT NULL CHECK (subtotal >= 0),
        total INTEGER NOT NULL CHECK (total >= 0),
        amount_paid INTEGER NOT NULL CHECK (amount_paid >= 0),
        amount_refunded INTEGER NOT NULL CHECK (amount_refunded >= 0 AND amount_refunded <= amount_paid),
        currency TEXT NOT NULL CHECK (length(currency) = 3),
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        expires_at TEXT,
        version INTEGER NOT NULL CHECK (version >= 1)
    ) STRICT, WITHOUT ROWID
    """,
    # A customer's orders, all or by status; everyone's by status. Newest first: id DESC
    # walks these backwards.
    "CREATE INDEX orders_customer_id ON orders (customer_id, id)",
    "CREATE INDEX orders_customer_status_id ON orders (customer_id, status, id)",
    "CREATE INDEX orders_status_id ON orders (status, id)",
    # The expiry sweep reads only orders awaiting payment: a partial index holds just
    # those, so paid and closed orders cost it nothing, however many there are.
    "CREATE INDEX orders_pending_expiry ON orders (expires_at) WHERE status = 'pending_payment'",
    """
    CREATE TABLE order_lines (
        order_id TEXT NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
        line_no INTEGER NOT NULL CHECK (line_no >= 0 AND line_no < 100),
        product_id TEXT NOT NULL,
        sku TEXT NOT NULL,
        name TEXT NOT NULL,
        unit_price INTEGER NOT NULL CHECK (unit_price >= 0),
        quantity INTEGER NOT NULL CHECK (quantity BETWEEN 1 AND 1000),
        PRIMARY KEY (order_id, line_no),
        UNIQUE (order_id, product_id)
    ) STRICT, WITHOUT ROWID
    """,
    """
    CREATE TABLE payments (
        id TEXT PRIMARY KEY,
        order_id TEXT NOT NULL REFERENCES orders (id),
        method TEXT NOT NULL CHECK (method IN ('card', 'manual')),
        provider TEXT NOT NULL CHECK (provider IN ('stripe', 'manual')),
        status TEXT NOT NULL CHECK (status IN ('requires_action', 'processing', 'succeeded', 'failed', 'canceled')),
        amount INTEGER NOT NULL CHECK (amount > 0),
        currency TEXT NOT NULL CHECK (length(currency) = 3),
        provider_reference TEXT,
        client_secret TEXT,
        next_action TEXT CHECK (next_action IS NULL OR json_valid(next_action)),
        failure_code TEXT,
        reference TEXT CHECK (reference IS NULL OR length(reference) BETWEEN 1 AND 200),
        payment_method TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        version INTEGER NOT NULL CHECK (version >= 1)
    ) STRICT, WITHOUT ROWID
    """,
    "CREATE UNIQUE INDEX payments_provider_reference ON payments (provider_reference)"
    " WHERE provider_reference IS NOT NULL",
    "CREATE INDEX payments_order_id ON payments (order_id, id)",
    """
    CREATE TABLE refunds (
        id TEXT PRIMARY KEY,
        payment_id TEXT NOT NULL REFERENCES payments (id),
        order_id TEXT NOT NULL REFERENCES orders (id),
        amount INTEGER NOT NULL CHECK (amount > 0),
        currency TEXT NOT NULL CHECK (length(currency) = 3),
        reason TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
        provider_reference TEXT,
        failure_code TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        version INTEGER NOT NULL CHECK (version >= 1)
    ) STRICT, WITHOUT ROWID
    """,
    "CREATE INDEX refunds_order_id ON refunds (order_id, id)",
    "CREATE INDEX refunds_payment_id ON refunds (payment_id, id)",
    # Behind the domain's own check: the refunds of a payment that count (pending and
    # succeeded) never add up to more than the payment captured.
    """
    CREATE TRIGGER refunds_within_captured BEFORE INSERT ON refunds
    WHEN new.status <> 'failed' AND new.amount + (
        SELECT coalesce(sum(amount), 0) FROM refunds WHERE payment_id = new.payment_id AND status <> 'failed'
    ) > coalesce((SELECT amount FROM payments WHERE id = new.payment_id AND status = 'succeeded'), 0)
    BEGIN
        SELECT RAISE(ABORT, 'refunds exceed what the payment captured');
    END
    """,
    """
    CREATE TABLE outbox (
        id TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        aggregate_type TEXT NOT NULL,
        aggregate_id TEXT NOT NULL,
        payload TEXT NOT NULL CHECK (json_valid(payload)),
        occurred_at TEXT NOT NULL,
        delivered_at TEXT
    ) STRICT, WITHOUT ROWID
    """,
    # Only what is still to deliver: the index stays small however long the history.
    "CREATE INDEX outbox_pending ON outbox (id) WHERE delivered_at IS NULL",
    """
    CREATE TABLE provider_events (
        provider TEXT NOT NULL,
        event_id TEXT NOT NULL,
        received_at TEXT NOT NULL,
        PRIMARY KEY (provider, event_id)
    ) STRICT, WITHOUT ROWID
    """,
)


def apply(db: sqlite_utils.Database) -> None:
    for statement in STATEMENTS:
        db.execute(statement)

"""Every statement the SQLite repositories run uses an index: EXPLAIN QUERY PLAN on a
migrated database, seeded with ~2000 products (and users, tokens, audit entries, orders,
payments, refunds, outbox events), both without planner statistics and after ANALYZE.

The statements are taken from adapters/sqlite/repositories.py itself (every upper-case
constant, and every variant of the list dictionaries), so a new or changed query is
checked without anyone remembering to add it here.
"""

from __future__ import annotations

import pathlib
import random
import re
import sqlite3
from collections.abc import Iterator

import pytest

from adapters.sqlite import migrate
from adapters.sqlite import repositories as repos
from core.ports.repositories import ProductSort

STATEMENT = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE)\b")
# A full-text query must be answered from the index of its MATCH ("...INDEX 0:M..."), not by
# walking every row of the virtual table.
FTS_MATCH = re.compile(r"^SCAN \w+ VIRTUAL TABLE INDEX \d+:\S*M")
# The "few" search plan sorts its matches (in any of the product sorts); repositories.py only
# chooses it when there are at most FEW_TEXT_MATCHES of them, so that sort is bounded.
BOUNDED_SORTS = {
    sql
    for queries in (repos.PRODUCT_LIST, repos.PRODUCT_LIST_VERSIONS)
    for key, sql in queries.items()
    if key[1] == "few"
}
#: Statements allowed to walk a partial index from its start: the index holds only the rows
#: they want (the outbox's undelivered events), so the walk stops after LIMIT of them.
PARTIAL_INDEX_WALKS = {"OUTBOX_LIST_PENDING": ["SCAN outbox USING INDEX outbox_pending"]}
#: Counting every user with no filter walks the smallest index whole: what a count of all
#: rows is (no caller needs it on a hot path; the last-admin rule counts by role and status).
WHOLE_COUNTS = {"USER_COUNT[(False, False)]"}
PARAMS = {
    "after": "prd_000000000100",
    "sort_key": 1000,  # a price, a name or a time: the plan is the same
    "customer_id": "usr_000000000007",
    "role": "staff",
    "status": "active",
    "email": "user7@example.com",
    "active": 1,
    "price_min": 1000,
    "price_max": 5000,
    "match": '"lamp"*',
    "cap": repos.FEW_TEXT_MATCHES + 1,
    "actor_id": "usr_000000000007",
    "action": "product.price_changed",
    "object_type": "product",
    "object_id": "prd_000000000042",
    "limit": 21,
    "now": "2026-01-01T00:00:00.000000Z",
    "until": "2026-01-01T00:15:00.000000Z",
    "seq": 7,
    "user_id": "usr_000000000007",
}


def repository_statements() -> Iterator[tuple[str, str]]:
    for name, value in vars(repos).items():
        if not name.isupper():
            continue
        if isinstance(value, str) and STATEMENT.match(value):
            yield name, value
        elif isinstance(value, dict):
            for key, sql in value.items():
                if isinstance(sql, str) and STATEMENT.match(sql):
                    yield f"{name}[{key}]", sql


STATEMENTS = dict(repository_statements())


def test_the_statements_are_all_found() -> None:
    lists = [n for n in STATEMENTS if "_LIST[" in n]
    # users (3 filters), products (active x 3 text plans x 7 sorts), audit (4 filters), orders (2 filters),
    # oauth clients (1 filter), API keys (1 filter)
    assert len(lists) == 8 + 2 * 3 * len(ProductSort) + 16 + 4 + 2 + 2
    assert len(ProductSort) == 7
    for name in (
        "USER_GET",
        "PRODUCT_UPDATE",
        "PRODUCT_UPDATE_STOCK",
        "OUTBOX_PURGE_DELIVERED",
        "OUTBOX_PURGE_UNDELIVERED",
        "PRODUCT_TEXT_MATCHES",
        "REFRESH_REVOKE_FAMILY",
        "AUDIT_INSERT",
        "ORDER_GET",
        "ORDER_DUE_FOR_EXPIRY",
        "PAYMENT_GET_BY_PROVIDER_REFERENCE",
        "REFUND_LIST_FOR_PAYMENT",
        "OUTBOX_LIST_PENDING",
        "PROVIDER_EVENT_INSERT",
        "OAUTH_CLIENT_GET",
        "OAUTH_CLIENT_UPDATE",
        "REFRESH_CLIENT_FAMILIES_SINCE",
        "REFRESH_CLIENT_USER_FAMILIES_SINCE",
        "REFRESH_REVOKE_CLIENT",
        "REFRESH_REVOKE_CLIENT_USER",
        "CODE_GET_BY_DIGEST",
        "CODE_MARK_USED",
        "CONSENT_PUT",
        "CONSENT_GET",
        "CONSENT_DELETE",
        "CONSENT_LIST_FOR_USER",
        "API_KEY_GET_BY_DIGEST",
        "API_KEY_RECORD_USE",
    ):
        assert name in STATEMENTS
    assert repos.FEW_TEXT_MATCHES <= 10_000  # what bounds the one sort allowed


def _seed(conn: sqlite3.Connection) -> None:
    rng = random.Random(7)
    t = "2026-01-01T00:00:00.000000Z"
    words = ["lamp", "chair", "table", "mug", "brass", "oak", "linen", "blue", "red", "desk", "floor", "wool"]
    conn.execute("BEGIN")
    conn.executemany(
        repos.USER_INSERT,
        [
            (
                f"usr_{n:012d}",
                f"user{n}@example.com",
                "fake$",
                rng.choices(["customer", "staff", "admin"], weights=[90, 8, 2])[0],
                "disabled" if n % 25 == 0 else "active",
                t,
                t,
                f"user{n}@exarnple.corn",
            )
            for n in range(200)
        ],
    )
    conn.executemany(
        repos.PRODUCT_INSERT,
        [
            (
                f"prd_{n:012d}",
                f"SKU-{n}",
                " ".join(rng.choices(words, k=3)),
                " ".join(rng.choices(words, k=12)),
                rng.randrange(100, 100_000),
                "USD",
                rng.randrange(0, 50),
                0 if n % 10 == 0 else 1,
                t,
                t,
                1,
            )
            for n in range(2000)
        ],
    )
    conn.executemany(
        repos.OAUTH_CLIENT_INSERT,
        [
            (
                f"cli_{n:012d}",
                f"App {n}",
                "public",
                '["https://app.example.com/cb"]',
                '["authorization_code"]',
                '["catalog:read"]',
                "active",
                None,
                None,
                t,
                t,
                None,
            )
            for n in range(20)
        ],
    )
    # Most sessions first-party (client and scope NULL), one in five an OAuth client's.
    conn.executemany(
        repos.REFRESH_INSERT,
        [
            (f"rtk_{n:012d}", f"usr_{n % 200:012d}", f"fam_{n // 5}", f"digest-{n}", t, t, None, None)
            + ((f"cli_{n % 20:012d}", "catalog:read") if n % 5 == 0 else (None, None))
            for n in range(500)
        ],
    )
    conn.executemany(
        repos.CODE_INSERT,
        [
            (
                f"acd_{n:012d}",
                f"code-{n}",
                f"cli_{n % 20:012d}",
                f"usr_{n % 200:012d}",
                "https://app.example.com/cb",
                "catalog:read",
                "c" * 43,
                t,
                "2026-01-01T00:05:00.000000Z",
                None,
                None,
            )
            for n in range(500)
        ],
    )
    conn.executemany(
        repos.CONSENT_PUT,
        [(f"usr_{n % 200:012d}", f"cli_{n % 20:012d}", "catalog:read", t, t) for n in range(400)],
    )
    actions = ["auth.login_succeeded", "auth.login_failed", "product.price_changed", "product.stock_adjusted"]
    conn.executemany(
        repos.AUDIT_INSERT,
        [
            (
                f"aud_{n:012d}",
                t,
                f"usr_{rng.randrange(50):012d}",
                rng.choice(actions),
                "product" if n % 3 else "user",
                f"prd_{rng.randrange(500):012d}",
                "10.0.0.1",
                "{}",
            )
            for n in range(2000)
        ],
    )
    statuses = ["pending_payment", "paid", "fulfilled", "cancelled", "expired", "partially_refunded", "refunded"]
    orders = []
    for n in range(2000):
        status = rng.choices(statuses, weights=[10, 30, 40, 8, 8, 2, 2])[0]
        paid = 0 if status in ("pending_payment", "cancelled", "expired") else 2400
        refunded = {"partially_refunded": 400, "refunded": 2400}.get(status, 0)
        expires = f"2026-01-01T00:{n % 60:02d}:00.000000Z" if status == "pending_payment" else None
        orders.append(
            (f"ord_{n:012d}", f"usr_{n % 200:012d}", status, 2400, 2400, paid, refunded, "USD", t, t, expires, 1)
        )
    conn.executemany(repos.ORDER_INSERT, orders)
    conn.executemany(
        repos.ORDER_LINE_INSERT,
        [
            (o[0], line, f"prd_{(n + line) % 2000:012d}", "SKU", "Thing", 1200, 1)
            for n, o in enumerate(orders)
            for line in (0, 1)
        ],
    )
    payments = [o for o in orders if o[5] > 0]
    conn.executemany(
        repos.PAYMENT_INSERT,
        [
            (
                f"pay_{n:012d}",
                o[0],
                "card",
                "stripe",
                "succeeded",
                2400,
                "USD",
                f"pi_{n}",
                None,
                None,
                None,
                None,
                "pm_card_visa",
                t,
                t,
                1,
            )
            for n, o in enumerate(payments)
        ],
    )
    conn.executemany(
        repos.REFUND_INSERT,
        [
            (f"ref_{n:012d}", f"pay_{n:012d}", o[0], o[6], "USD", "Broken", "succeeded", f"re_{n}", None, t, t, 1)
            for n, o in enumerate(payments)
            if o[6] > 0
        ],
    )
    conn.executemany(
        repos.OUTBOX_INSERT,
        [(f"evt_{n:012d}", "order.created", "order", f"ord_{n:012d}", "{}", t) for n in range(2000)],
    )
    conn.execute("UPDATE outbox SET delivered_at = occurred_at WHERE id < 'evt_000000001900'")
    conn.executemany(repos.PROVIDER_EVENT_INSERT, [("stripe", f"evt_{n}", t) for n in range(2000)])
    conn.executemany(
        repos.API_KEY_INSERT,
        [
            (f"key_{n:012d}", f"usr_{n % 200:012d}", "script", "catalog:read", f"digest-{n}", t, t, None, None)
            for n in range(500)
        ],
    )
    conn.execute("COMMIT")


@pytest.fixture(scope="module", params=["without_stats", "analyzed"])
def conn(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[sqlite3.Connection]:
    path: pathlib.Path = tmp_path_factory.mktemp("plans") / "tillbox.db"
    migrate(path)
    connection = sqlite3.connect(path, isolation_level=None)
    _seed(connection)
    if request.param == "analyzed":
        connection.execute("ANALYZE")
        assert connection.execute("SELECT count(*) FROM sqlite_stat1").fetchone()[0] > 0
    yield connection
    connection.close()


def plan(conn: sqlite3.Connection, sql: str) -> list[str]:
    params = PARAMS if ":" in sql else (None,) * sql.count("?")
    return [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]


@pytest.mark.parametrize("name", list(STATEMENTS))
def test_every_statement_searches_an_index(conn: sqlite3.Connection, name: str) -> None:
    sql = STATEMENTS[name]
    steps = plan(conn, sql)

    if sql.lstrip().startswith("INSERT"):
        assert steps == []  # nothing to look up (constraint checks use the unique indexes)
        return
    if name in PARTIAL_INDEX_WALKS:
        assert steps == PARTIAL_INDEX_WALKS[name]
        return
    if name in WHOLE_COUNTS:
        assert len(steps) == 1 and steps[0].startswith("SCAN users USING COVERING INDEX"), steps
        return
    for step in steps:
        if step.startswith("SCAN "):
            # Allowed scans: a full-text match, a subquery's result, and json_each over a bound
            # parameter (the list of ids of PRODUCT_GET_MANY: at most a page, never a table).
            allowed = FTS_MATCH.match(step) or step.startswith(("SCAN (subquery", "SCAN json_each VIRTUAL TABLE"))
            assert allowed, f"{name} scans: {steps}"
        if "TEMP B-TREE" in step:
            assert sql in BOUNDED_SORTS, f"{name} sorts: {steps}"
    assert any(step.startswith("SEARCH") or FTS_MATCH.match(step) for step in steps), f"{name}: {steps}"


def test_the_first_page_uses_the_same_plan_as_the_next_ones(conn: sqlite3.Connection) -> None:
    # Lists bind a bound every id passes instead of dropping the condition (which would
    # make the first page a SCAN of the index): the same statement serves every page.
    first = {**PARAMS, "after": repos.FIRST_ASCENDING}
    steps = [
        row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {repos.PRODUCT_LIST[False, None, ProductSort.ID]}", first)
    ]
    assert steps == ["SEARCH p USING INDEX sqlite_autoindex_products_1 (id>?)"]


@pytest.mark.parametrize("sort", list(ProductSort), ids=[s.value for s in ProductSort])
@pytest.mark.parametrize("active", [False, True], ids=["everything", "active"])
def test_every_sort_reads_its_own_index_in_order(conn: sqlite3.Connection, sort: ProductSort, active: bool) -> None:
    # No sort of the catalog is a scan or a sort of the table, with or without a price range:
    # a range of the index of its key, read in order, that LIMIT stops.
    column = {"id": "id", "price": "price", "name": "name", "created_at": "created_at"}[sort.value.lstrip("-")]
    steps = plan(conn, repos.PRODUCT_LIST[active, None, sort])
    assert len(steps) == 1 and steps[0].startswith("SEARCH p USING "), steps
    assert "TEMP B-TREE" not in " ".join(steps)
    if column != "id":
        index = f"products_active_{column}_id" if active else f"products_{column}_id"
        assert f"INDEX {index} (" in steps[0], steps


@pytest.mark.parametrize(
    ("name", "index"),
    [
        ("REFRESH_CLIENT_FAMILIES_SINCE", "refresh_tokens_client_created (client_id=? AND created_at>?)"),
        (
            "REFRESH_CLIENT_USER_FAMILIES_SINCE",
            "refresh_tokens_client_user (client_id=? AND user_id=? AND created_at>?)",
        ),
    ],
)
def test_a_clients_sessions_since_a_time_are_read_from_that_time_on(
    conn: sqlite3.Connection, name: str, index: str
) -> None:
    # Not every token the client was ever given: only those made since (both bounds in the index).
    assert plan(conn, STATEMENTS[name]) == [f"SEARCH refresh_tokens USING INDEX {index}"]

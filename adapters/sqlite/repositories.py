"""SQLite repositories: the Protocols of core/ports/repositories.py over the stdlib driver.

Every statement is a module-level constant (lists with optional filters have one constant
per combination of filters, built once at import by one builder, _list_statements), so the
driver's statement cache prepares each once per connection, and tests/integration checks
the plan of every one. Statements run through the unit's Session: on the event loop, or
in a thread for units that may be slow; the repositories do not know which.

Lists are keyset-paginated: ``id > :after`` (newest first: ``id < :after``), or for a product
sort ``(key, id) > (:sort_key, :after)``, with one more row than asked for, never OFFSET.
The first page uses a bound that every row passes, so that the first page and the next ones
are the same statement and the same plan. Where a page ends travels as a cursor
(adapters/sqlite/cursors.py) bound to its list, sort and filters.
"""

from __future__ import annotations

import builtins
import itertools
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import attrs
import orjson

from adapters import cursors
from adapters.sqlite.session import Row, Session
from adapters.timestamps import format_timestamp, parse_timestamp
from adapters.versions import moved
from core.domain.api_keys import ApiKey
from core.domain.audit import AuditEntry
from core.domain.catalog import Product
from core.domain.errors import EmailTaken, InvalidCursor, ProviderReferenceTaken, SkuTaken
from core.domain.events import DomainEvent
from core.domain.grants import AuthorizationCode, Consent
from core.domain.money import Money
from core.domain.oauth import ClientStatus, ClientType, GrantType, OAuthClient
from core.domain.orders import Order, OrderLine, OrderStatus
from core.domain.pagination import Page, PageRequest
from core.domain.payments import Payment, PaymentMethod, PaymentStatus, Refund, RefundStatus
from core.domain.scopes import format_scopes
from core.domain.users import RefreshToken, Role, User, UserStatus
from core.ports.idempotency import IdempotencyClaim, StoredRequest
from core.ports.repositories import (
    ApiKeyFilter,
    AuditFilter,
    EndedSession,
    OAuthClientFilter,
    OrderFilter,
    OrderSummary,
    ProductFilter,
    ProductSort,
    ProductVersion,
    SessionChanges,
    UserFilter,
)

T = TypeVar("T")

#: Sorts before every id: the "after" of a first page in ascending order.
FIRST_ASCENDING = ""
#: Sorts after every id (the largest code point): the "after" of a first page, newest first.
FIRST_DESCENDING = "\U0010ffff"
#: Sorts after every text (SQLite orders any BLOB after any TEXT): the bound of a first page
#: sorted by a text the user chose (a product name may hold any character).
AFTER_ALL_TEXT = b""
#: The extremes of a price range left open (prices are 64-bit integers).
PRICE_FLOOR = -(2**63)
PRICE_CEILING = 2**63 - 1
#: A text search matching at most this many products is run from the full-text index and
#: sorted (cheap for a few rows); above it, the products are walked in the sort's order
#: and each is looked up in the set of matches (cheap when matches are dense). See
#: _product_list_sql.
FEW_TEXT_MATCHES = 1000


class _Repository:
    def __init__(self, session: Session):
        self._session = session  # the unit of work says where its statements run


# Lists.
def _list_sql(columns: str, source: str, where: Sequence[str], order: str) -> str:
    """The one shape of every list statement: its keyset bound and the filters that are set,
    in the list's order, one row more than a page (which says whether another follows)."""
    return f"SELECT {columns} FROM {source} WHERE {' AND '.join(where)} ORDER BY {order} LIMIT :limit"


def _list_statements(
    columns: str, source: str, keyset: str, order: str, filters: Sequence[str], prefix: str = ""
) -> dict[tuple[bool, ...], str]:
    """A list with optional equality filters: one statement per combination of the filters
    that are set, keyed by which are (in the order of ``filters``)."""
    return {
        flags: _list_sql(
            columns,
            source,
            [keyset, *(f"{prefix}{name} = :{name}" for name, on in zip(filters, flags, strict=True) if on)],
            order,
        )
        for flags in itertools.product((False, True), repeat=len(filters))
    }


def _page(rows: Sequence[Row], page: PageRequest, build: Callable[[Row], T], cursor: Callable[[Row], str]) -> Page[T]:
    items = [build(row) for row in rows[: page.limit]]
    if len(rows) > page.limit:
        return Page(items=items, next_after=cursor(rows[page.limit - 1]))
    return Page(items=items, next_after=None)


async def _filtered_list(
    session: Session,
    statements: Mapping[tuple[bool, ...], str],
    name: str,
    filters: Mapping[str, str | None],
    page: PageRequest,
    build: Callable[[Row], T],
    *,
    descending: bool,
) -> Page[T]:
    """A page of a list in id order with optional equality filters (users, orders, audit)."""
    bound_to = cursors.binding(name, *filters.values())
    if page.after is None:
        after = FIRST_DESCENDING if descending else FIRST_ASCENDING
    else:
        (after,) = cursors.decode(page.after, bound_to, (str,))
    sql = statements[tuple(value is not None for value in filters.values())]
    rows = await session.fetchall(sql, {**filters, "after": after, "limit": page.limit + 1})
    return _page(rows, page, build, lambda row: cursors.encode(bound_to, [row[0]]))


def _is_unique_violation(exc: sqlite3.IntegrityError, column: str) -> bool:
    return str(exc) == f"UNIQUE constraint failed: {column}"


def _optional_timestamp(text: str | None) -> datetime | None:
    return None if text is None else parse_timestamp(text)


def _optional_format(at: datetime | None) -> str | None:
    return None if at is None else format_timestamp(at)


# Users.
_USER_COLUMNS = "id, email, password_hash, role, status, created_at, updated_at, email_skeleton"
USER_INSERT = f"INSERT INTO users ({_USER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
USER_GET = f"SELECT {_USER_COLUMNS} FROM users WHERE id = ?"
USER_GET_BY_EMAIL = f"SELECT {_USER_COLUMNS} FROM users WHERE email = ?"
USER_UPDATE = "UPDATE users SET role = ?, status = ?, password_hash = ?, updated_at = ? WHERE id = ?"


#: Keyed by which filters are set: (role, status, email).
USER_LIST = _list_statements(_USER_COLUMNS, "users", "id > :after", "id", ("role", "status", "email"))


def _user(row: tuple[Any, ...]) -> User:
    return User(
        id=row[0],
        email=row[1],
        password_hash=row[2],
        role=Role(row[3]),
        status=UserStatus(row[4]),
        created_at=parse_timestamp(row[5]),
        updated_at=parse_timestamp(row[6]),
        email_skeleton=row[7] or "",  # accounts that predate skeletons may lack one (migration 6)
    )


def _user_count_sql(role: bool, status: bool) -> str:
    where = ["1"]
    where += ["role = :role"] if role else []
    where += ["status = :status"] if status else []
    return f"SELECT count(*) FROM users WHERE {' AND '.join(where)}"


#: Keyed by which filters are set: (role, status).
USER_COUNT: dict[tuple[bool, ...], str] = {
    flags: _user_count_sql(*flags) for flags in itertools.product((False, True), repeat=2)
}


class SqliteUserRepository(_Repository):
    async def add(self, user: User) -> None:
        try:
            await self._session.execute(
                USER_INSERT,
                (
                    user.id,
                    user.email,
                    user.password_hash,
                    user.role.value,
                    user.status.value,
                    format_timestamp(user.created_at),
                    format_timestamp(user.updated_at),
                    user.email_skeleton,
                ),
            )
        except sqlite3.IntegrityError as exc:
            if _is_unique_violation(exc, "users.email") or _is_unique_violation(exc, "users.email_skeleton"):
                raise EmailTaken() from None
            raise

    async def get(self, user_id: str) -> User | None:
        rows = await self._session.fetchall(USER_GET, (user_id,))
        return _user(rows[0]) if rows else None

    async def get_by_email(self, email: str) -> User | None:
        rows = await self._session.fetchall(USER_GET_BY_EMAIL, (email,))
        return _user(rows[0]) if rows else None

    async def update(self, user: User) -> None:
        await self._session.execute(
            USER_UPDATE,
            (user.role.value, user.status.value, user.password_hash, format_timestamp(user.updated_at), user.id),
        )

    async def list(self, page: PageRequest, filter: UserFilter) -> Page[User]:
        filters = {
            "role": None if filter.role is None else filter.role.value,
            "status": None if filter.status is None else filter.status.value,
            "email": filter.email,
        }
        return await _filtered_list(self._session, USER_LIST, "users", filters, page, _user, descending=False)

    async def count(self, filter: UserFilter) -> int:
        if filter.email is not None:
            user = await self.get_by_email(filter.email)
            matches = user is not None and filter.role in (None, user.role) and filter.status in (None, user.status)
            return int(matches)
        sql = USER_COUNT[filter.role is not None, filter.status is not None]
        params = {
            "role": None if filter.role is None else filter.role.value,
            "status": None if filter.status is None else filter.status.value,
        }
        # Writes are serialized (one writer, BEGIN IMMEDIATE): a count read in a write unit
        # holds until it commits, as the port asks.
        ((count,),) = await self._session.fetchall(sql, params)
        return int(count)


# Products.
_PRODUCT_COLUMNS = "id, sku, name, description, price, currency, stock, active, created_at, updated_at, version"
PRODUCT_INSERT = f"INSERT INTO products ({_PRODUCT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
PRODUCT_GET = f"SELECT {_PRODUCT_COLUMNS} FROM products WHERE id = ?"
PRODUCT_GET_BY_SKU = f"SELECT {_PRODUCT_COLUMNS} FROM products WHERE sku = ?"
# Optimistic concurrency: the row must still be at the version the caller read; it moves on.
PRODUCT_UPDATE = (
    "UPDATE products SET sku = ?, name = ?, description = ?, price = ?, currency = ?, stock = ?, active = ?,"
    " created_at = ?, updated_at = ?, version = version + 1 WHERE id = ? AND version = ?"
)
# When only the stock changed since the row was read (every order placed, cancelled or
# expired): SQLite rewrites the indexes of every column a SET names, changed or not, so
# naming only these leaves the sort indexes alone (~2x cheaper per product).
PRODUCT_UPDATE_STOCK = (
    "UPDATE products SET stock = ?, updated_at = ?, version = version + 1 WHERE id = ? AND version = ?"
)
PRODUCT_DELETE = "DELETE FROM products WHERE id = ?"
#: How many products a text search matches, counting no further than it needs to.
PRODUCT_TEXT_MATCHES = "SELECT count(*) FROM (SELECT 1 FROM products_fts(:match) LIMIT :cap)"


@attrs.frozen
class _Sort:
    """How a ProductSort is read from SQLite: the column before the id (None: the id alone),
    the direction, and the key of a first page (one every product passes)."""

    column: str | None
    descending: bool
    first: tuple[Any, ...]
    types: tuple[type, ...]  # of the key in a cursor
    collate: str = ""

    def key(self) -> str:
        """The sorted expression: what the index holds and the keyset compares."""
        return f"{self.column}{self.collate}"


_SORTS: dict[ProductSort, _Sort] = {
    ProductSort.ID: _Sort(None, False, (FIRST_ASCENDING,), (str,)),
    ProductSort.PRICE: _Sort("p.price", False, (PRICE_FLOOR, FIRST_ASCENDING), (int, str)),
    ProductSort.PRICE_DESC: _Sort("p.price", True, (PRICE_CEILING, FIRST_DESCENDING), (int, str)),
    # NOCASE folds A-Z only, byte for byte: what the port promises (and the fake does).
    ProductSort.NAME: _Sort("p.name", False, ("", FIRST_ASCENDING), (str, str), " COLLATE NOCASE"),
    ProductSort.NAME_DESC: _Sort("p.name", True, (AFTER_ALL_TEXT, FIRST_DESCENDING), (str, str), " COLLATE NOCASE"),
    ProductSort.CREATED_AT: _Sort("p.created_at", False, (FIRST_ASCENDING, FIRST_ASCENDING), (str, str)),
    ProductSort.CREATED_AT_DESC: _Sort("p.created_at", True, (FIRST_DESCENDING, FIRST_DESCENDING), (str, str)),
}


def _product_list_sql(active: bool, text: str | None, sort: ProductSort, columns: str = _PRODUCT_COLUMNS) -> str:
    """``text`` is None (no search), "few" or "many" (see FEW_TEXT_MATCHES).

    Both search plans give the same rows in the same order. "few" starts from the
    full-text index (CROSS JOIN fixes the join order) and sorts its matches: a temp B-tree
    of at most FEW_TEXT_MATCHES rows. "many" walks products in the sort's order through an
    index and keeps those in the set of matches (the unary + stops SQLite from driving the
    query from that set, which would sort every match).

    The keyset of a sort by a column is written out, ``key >= k AND (key > k OR id > after)``,
    rather than as a row value: SQLite reads a row value of a collated column (the name) as
    no index range at all. The price range is the index range of a sort by price (its near
    end is the first page's key, see _list); for other sorts the unary + keeps SQLite from
    reading the price index and sorting the range. A sorted list selects its sort column
    last, for the cursor."""
    how = _SORTS[sort]
    selected = ", ".join(f"p.{c}" for c in columns.split(", "))
    where = ["p.active = :active"] if active else []
    beyond, direction = ("<", " DESC") if how.descending else (">", "")
    if how.column is None:
        where += [f"p.id {beyond} :after", "+p.price BETWEEN :price_min AND :price_max"]
        order = f"p.id{direction}"
    else:
        key = how.key()
        selected += f", {how.column}"
        where += [f"{key} {beyond}= :sort_key", f"({key} {beyond} :sort_key OR p.id {beyond} :after)"]
        if how.column == "p.price":
            where.append("p.price >= :price_min" if how.descending else "p.price <= :price_max")
        else:
            where.append("+p.price BETWEEN :price_min AND :price_max")
        order = f"{key}{direction}, p.id{direction}"
    source = "products AS p"
    if text == "few":
        source = "products_fts(:match) AS f CROSS JOIN products AS p ON p.seq = f.rowid"
    elif text == "many":
        where.append("+p.seq IN (SELECT rowid FROM products_fts(:match))")
    return _list_sql(selected, source, where, order)


_PRODUCT_LISTS = [
    (active, text, sort) for active in (False, True) for text in (None, "few", "many") for sort in ProductSort
]
#: Keyed by (whether the active filter is set, the text plan: None, "few" or "many", the sort).
PRODUCT_LIST: dict[tuple[bool, str | None, ProductSort], str] = {key: _product_list_sql(*key) for key in _PRODUCT_LISTS}
#: The same queries, selecting only what tells a copy from the current version.
PRODUCT_LIST_VERSIONS: dict[tuple[bool, str | None, ProductSort], str] = {
    key: _product_list_sql(*key, "id, version") for key in _PRODUCT_LISTS
}
#: Many products by id in one constant statement (the ids travel as one JSON array).
PRODUCT_GET_MANY = f"SELECT {_PRODUCT_COLUMNS} FROM products WHERE id IN (SELECT value FROM json_each(?))"
PRODUCT_GET_MANY_BY_SKU = f"SELECT {_PRODUCT_COLUMNS} FROM products WHERE sku IN (SELECT value FROM json_each(?))"
#: Active products running out: a range of products_active_stock_id (migration 10), in its order.
PRODUCT_LOW_STOCK = (
    f"SELECT {_PRODUCT_COLUMNS} FROM products WHERE active = 1 AND stock <= ? ORDER BY stock, id LIMIT ?"
)


def fts_query(text: str) -> str | None:
    """A safe FTS5 query for free text: its words (runs of letters and digits, everything
    else dropped), each a quoted phrase matched as a prefix, all required. None if no word
    remains. No character of the user's text reaches FTS5 syntax: a word has no quote."""
    words = "".join(c if c.isalnum() else " " for c in text).split()
    if not words:
        return None
    return " ".join(f'"{word}"*' for word in words)


def _product(row: tuple[Any, ...]) -> Product:
    return Product(
        id=row[0],
        sku=row[1],
        name=row[2],
        description=row[3],
        price=Money(row[4], row[5]),
        stock=row[6],
        active=bool(row[7]),
        created_at=parse_timestamp(row[8]),
        updated_at=parse_timestamp(row[9]),
        version=row[10],
    )


def _product_row(product: Product) -> Row:
    """The columns of _PRODUCT_COLUMNS, as stored."""
    return (
        product.id,
        product.sku,
        product.name,
        product.description,
        product.price.amount,
        product.price.currency,
        product.stock,
        int(product.active),
        format_timestamp(product.created_at),
        format_timestamp(product.updated_at),
        product.version,
    )


def _product_version(row: tuple[Any, ...]) -> ProductVersion:
    return ProductVersion(row[0], row[1])


class SqliteProductRepository(_Repository):
    def __init__(self, session: Session):
        super().__init__(session)
        # The rows as this unit of work read them, by id: an update that changes only the
        # stock of one of them names only the stock (PRODUCT_UPDATE_STOCK).
        self._read: dict[str, Row] = {}

    def _remember(self, row: Row) -> Product:
        self._read[row[0]] = row
        return _product(row)

    async def add(self, product: Product) -> None:
        try:
            await self._session.execute(PRODUCT_INSERT, _product_row(product))
        except sqlite3.IntegrityError as exc:
            if _is_unique_violation(exc, "products.sku"):
                raise SkuTaken(product.sku) from None
            raise

    async def add_many(self, products: Sequence[Product]) -> None:
        # A statement on the loop takes microseconds: one by one costs little, and says
        # which sku is taken.
        for product in products:
            await self.add(product)

    async def get(self, product_id: str) -> Product | None:
        rows = await self._session.fetchall(PRODUCT_GET, (product_id,))
        return self._remember(rows[0]) if rows else None

    async def get_by_sku(self, sku: str) -> Product | None:
        rows = await self._session.fetchall(PRODUCT_GET_BY_SKU, (sku,))
        return self._remember(rows[0]) if rows else None

    async def update(self, product: Product) -> None:
        row = _product_row(product)
        seen = self._read.get(product.id)
        try:
            if seen is not None and seen[1:6] == row[1:6] and seen[7:9] == row[7:9]:
                changed = await self._session.execute(
                    PRODUCT_UPDATE_STOCK, (product.stock, row[9], product.id, product.version)
                )
            else:
                changed = await self._session.execute(PRODUCT_UPDATE, (*row[1:10], product.id, product.version))
        except sqlite3.IntegrityError as exc:
            if _is_unique_violation(exc, "products.sku"):
                raise SkuTaken(product.sku) from None
            raise
        moved(changed, product, "The product")
        self._read[product.id] = (*row[:10], product.version)

    async def delete(self, product_id: str) -> bool:
        return (await self._session.execute(PRODUCT_DELETE, (product_id,))) > 0

    async def list(self, page: PageRequest, filter: ProductFilter, sort: ProductSort = ProductSort.ID) -> Page[Product]:
        return await self._list(page, filter, sort, PRODUCT_LIST, self._remember)

    async def list_versions(
        self, page: PageRequest, filter: ProductFilter, sort: ProductSort = ProductSort.ID
    ) -> Page[ProductVersion]:
        return await self._list(page, filter, sort, PRODUCT_LIST_VERSIONS, _product_version)

    async def get_many(self, product_ids: Sequence[str]) -> builtins.list[Product]:
        if not product_ids:
            return []
        rows = await self._session.fetchall(PRODUCT_GET_MANY, (orjson.dumps(list(product_ids)),))
        return [self._remember(row) for row in rows]

    async def get_many_by_sku(self, skus: Sequence[str]) -> builtins.list[Product]:
        if not skus:
            return []
        rows = await self._session.fetchall(PRODUCT_GET_MANY_BY_SKU, (orjson.dumps(list(skus)),))
        return [self._remember(row) for row in rows]

    async def low_stock(self, threshold: int, limit: int) -> builtins.list[Product]:
        return [_product(row) for row in await self._session.fetchall(PRODUCT_LOW_STOCK, (threshold, limit))]

    async def _list(
        self,
        page: PageRequest,
        filter: ProductFilter,
        sort: ProductSort,
        queries: Mapping[tuple[bool, str | None, ProductSort], str],
        build: Callable[[Row], T],
    ) -> Page[T]:
        how = _SORTS[sort]
        bound_to = cursors.binding(
            "products", sort.value, filter.active, filter.price_min, filter.price_max, filter.text
        )
        price_min = PRICE_FLOOR if filter.price_min is None else filter.price_min
        price_max = PRICE_CEILING if filter.price_max is None else filter.price_max
        if page.after is not None:
            key = tuple(cursors.decode(page.after, bound_to, how.types))
            if how.column == "p.price" and not price_min <= key[0] <= price_max:
                # The walk's near end is the key: one outside the range (an edited cursor;
                # every page's own keys are inside it) would walk past the range's end.
                raise InvalidCursor()
        elif how.column == "p.price":  # the near end of the price range starts the walk
            key = (price_max, FIRST_DESCENDING) if how.descending else (price_min, FIRST_ASCENDING)
        else:
            key = how.first
        params: dict[str, Any] = {
            "active": None if filter.active is None else int(filter.active),
            "after": key[-1],
            "sort_key": key[0] if how.column is not None else None,
            "price_min": price_min,
            "price_max": price_max,
            "limit": page.limit + 1,
        }
        text_plan = None
        if filter.text is not None:
            match = fts_query(filter.text)
            if match is None:
                return Page(items=[], next_after=None)
            params["match"] = match
            params["cap"] = FEW_TEXT_MATCHES + 1
            ((matches,),) = await self._session.fetchall(PRODUCT_TEXT_MATCHES, params)
            text_plan = "few" if matches <= FEW_TEXT_MATCHES else "many"
        sql = queries[filter.active is not None, text_plan, sort]
        rows = await self._session.fetchall(sql, params)
        if how.column is None:
            return _page(rows, page, build, lambda row: cursors.encode(bound_to, [row[0]]))
        return _page(rows, page, build, lambda row: cursors.encode(bound_to, [row[-1], row[0]]))


# Refresh tokens.
_REFRESH_COLUMNS = "id, user_id, family_id, token_digest, created_at, expires_at, used_at, revoked_at, client_id, scope"
REFRESH_INSERT = f"INSERT INTO refresh_tokens ({_REFRESH_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
REFRESH_GET_BY_DIGEST = f"SELECT {_REFRESH_COLUMNS} FROM refresh_tokens WHERE token_digest = ?"
REFRESH_MARK_USED = "UPDATE refresh_tokens SET used_at = ? WHERE id = ? AND used_at IS NULL AND revoked_at IS NULL"
REFRESH_REVOKE_FAMILY = "UPDATE refresh_tokens SET revoked_at = ? WHERE family_id = ? AND revoked_at IS NULL"
REFRESH_REVOKE_USER = "UPDATE refresh_tokens SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL"
# A few tokens per family at most: duplicates are dropped in Python, not sorted for in SQL.
REFRESH_FAMILIES_SINCE = "SELECT family_id FROM refresh_tokens WHERE user_id = ? AND created_at >= ?"
# A client's sessions (migration 12's partial indexes): of one user, or of all of them.
REFRESH_CLIENT_FAMILIES_SINCE = "SELECT family_id FROM refresh_tokens WHERE client_id = ? AND created_at >= ?"
REFRESH_CLIENT_USER_FAMILIES_SINCE = (
    "SELECT family_id FROM refresh_tokens WHERE client_id = ? AND user_id = ? AND created_at >= ?"
)
REFRESH_REVOKE_CLIENT = "UPDATE refresh_tokens SET revoked_at = ? WHERE client_id = ? AND revoked_at IS NULL"
REFRESH_REVOKE_CLIENT_USER = (
    "UPDATE refresh_tokens SET revoked_at = ? WHERE client_id = ? AND user_id = ? AND revoked_at IS NULL"
)


def _token(row: tuple[Any, ...]) -> RefreshToken:
    return RefreshToken(
        id=row[0],
        user_id=row[1],
        family_id=row[2],
        token_digest=row[3],
        created_at=parse_timestamp(row[4]),
        expires_at=parse_timestamp(row[5]),
        used_at=_optional_timestamp(row[6]),
        revoked_at=_optional_timestamp(row[7]),
        client_id=row[8],
        scope=row[9],
    )


class SqliteRefreshTokenRepository(_Repository):
    async def add(self, token: RefreshToken) -> None:
        await self._session.execute(
            REFRESH_INSERT,
            (
                token.id,
                token.user_id,
                token.family_id,
                token.token_digest,
                format_timestamp(token.created_at),
                format_timestamp(token.expires_at),
                _optional_format(token.used_at),
                _optional_format(token.revoked_at),
                token.client_id,
                token.scope,
            ),
        )

    async def get_by_digest(self, digest: str) -> RefreshToken | None:
        rows = await self._session.fetchall(REFRESH_GET_BY_DIGEST, (digest,))
        return _token(rows[0]) if rows else None

    async def mark_used(self, token_id: str, at: datetime) -> bool:
        return (await self._session.execute(REFRESH_MARK_USED, (format_timestamp(at), token_id))) == 1

    async def revoke_family(self, family_id: str, at: datetime) -> int:
        return await self._session.execute(REFRESH_REVOKE_FAMILY, (format_timestamp(at), family_id))

    async def revoke_all_for_user(self, user_id: str, at: datetime) -> int:
        return await self._session.execute(REFRESH_REVOKE_USER, (format_timestamp(at), user_id))

    async def families_since(self, user_id: str, since: datetime) -> builtins.list[str]:
        rows = await self._session.fetchall(REFRESH_FAMILIES_SINCE, (user_id, format_timestamp(since)))
        return sorted({row[0] for row in rows})

    async def client_families_since(self, client_id: str, user_id: str | None, since: datetime) -> builtins.list[str]:
        if user_id is None:
            rows = await self._session.fetchall(REFRESH_CLIENT_FAMILIES_SINCE, (client_id, format_timestamp(since)))
        else:
            rows = await self._session.fetchall(
                REFRESH_CLIENT_USER_FAMILIES_SINCE, (client_id, user_id, format_timestamp(since))
            )
        return sorted({row[0] for row in rows})

    async def revoke_client(self, client_id: str, user_id: str | None, at: datetime) -> int:
        if user_id is None:
            return await self._session.execute(REFRESH_REVOKE_CLIENT, (format_timestamp(at), client_id))
        return await self._session.execute(REFRESH_REVOKE_CLIENT_USER, (format_timestamp(at), client_id, user_id))


# Authorization codes. Marking one used is one conditional UPDATE: of two exchanges of one
# code at once (writers are serialized), the second finds it used and changes nothing.
_CODE_COLUMNS = (
    "id, code_digest, client_id, user_id, redirect_uri, scope, code_challenge, created_at, expires_at,"
    " used_at, family_id"
)
CODE_INSERT = f"INSERT INTO authorization_codes ({_CODE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
CODE_GET_BY_DIGEST = f"SELECT {_CODE_COLUMNS} FROM authorization_codes WHERE code_digest = ?"
CODE_MARK_USED = "UPDATE authorization_codes SET used_at = ?, family_id = ? WHERE id = ? AND used_at IS NULL"
CODE_PURGE = (
    "DELETE FROM authorization_codes"
    " WHERE id IN (SELECT id FROM authorization_codes WHERE expires_at < ? ORDER BY expires_at LIMIT ?)"
)


def _authorization_code(row: tuple[Any, ...]) -> AuthorizationCode:
    return AuthorizationCode(
        id=row[0],
        code_digest=row[1],
        client_id=row[2],
        user_id=row[3],
        redirect_uri=row[4],
        scope=row[5],
        code_challenge=row[6],
        created_at=parse_timestamp(row[7]),
        expires_at=parse_timestamp(row[8]),
        used_at=_optional_timestamp(row[9]),
        family_id=row[10],
    )


class SqliteAuthorizationCodeRepository(_Repository):
    async def add(self, code: AuthorizationCode) -> None:
        await self._session.execute(
            CODE_INSERT,
            (
                code.id,
                code.code_digest,
                code.client_id,
                code.user_id,
                code.redirect_uri,
                code.scope,
                code.code_challenge,
                format_timestamp(code.created_at),
                format_timestamp(code.expires_at),
                _optional_format(code.used_at),
                code.family_id,
            ),
        )

    async def get_by_digest(self, digest: str) -> AuthorizationCode | None:
        rows = await self._session.fetchall(CODE_GET_BY_DIGEST, (digest,))
        return _authorization_code(rows[0]) if rows else None

    async def mark_used(self, code_id: str, at: datetime, family_id: str) -> bool:
        return (await self._session.execute(CODE_MARK_USED, (format_timestamp(at), family_id, code_id))) == 1

    async def purge(self, before: datetime, limit: int) -> int:
        return await self._session.execute(CODE_PURGE, (format_timestamp(before), limit))


# Consents: one row a user and client; a user's list is their primary key's range.
_CONSENT_COLUMNS = "user_id, client_id, scope, granted_at, updated_at"
CONSENT_PUT = (
    f"INSERT INTO oauth_consents ({_CONSENT_COLUMNS}) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (user_id, client_id) DO UPDATE"
    " SET scope = excluded.scope, granted_at = excluded.granted_at, updated_at = excluded.updated_at"
)
CONSENT_GET = f"SELECT {_CONSENT_COLUMNS} FROM oauth_consents WHERE user_id = ? AND client_id = ?"
CONSENT_DELETE = "DELETE FROM oauth_consents WHERE user_id = ? AND client_id = ?"
CONSENT_LIST_FOR_USER = f"SELECT {_CONSENT_COLUMNS} FROM oauth_consents WHERE user_id = ? ORDER BY client_id"


def _consent(row: tuple[Any, ...]) -> Consent:
    return Consent(
        user_id=row[0],
        client_id=row[1],
        scope=row[2],
        granted_at=parse_timestamp(row[3]),
        updated_at=parse_timestamp(row[4]),
    )


class SqliteConsentRepository(_Repository):
    async def get(self, user_id: str, client_id: str) -> Consent | None:
        rows = await self._session.fetchall(CONSENT_GET, (user_id, client_id))
        return _consent(rows[0]) if rows else None

    async def put(self, consent: Consent) -> None:
        await self._session.execute(
            CONSENT_PUT,
            (
                consent.user_id,
                consent.client_id,
                consent.scope,
                format_timestamp(consent.granted_at),
                format_timestamp(consent.updated_at),
            ),
        )

    async def delete(self, user_id: str, client_id: str) -> bool:
        return (await self._session.execute(CONSENT_DELETE, (user_id, client_id))) == 1

    async def list_for_user(self, user_id: str) -> builtins.list[Consent]:
        return [_consent(row) for row in await self._session.fetchall(CONSENT_LIST_FOR_USER, (user_id,))]


# Ended sessions. ``seq`` orders records as they were committed (writers are serialized),
# so "seq greater than the last one scanned" is every record committed since. A first load
# reads the live records through the `until` index, in (until, seq) order, so that it costs
# what the live records are, whatever expired ones wait for the purge; the cursor remembers
# the largest seq at its start, from which the incremental reads go on.
REVOKED_SESSION_INSERT = (
    "INSERT INTO revoked_sessions (session_id, revoked_at, until) VALUES (?, ?, ?) ON CONFLICT (session_id) DO NOTHING"
)
REVOKED_SESSION_TOP = "SELECT coalesce(max(seq), 0) FROM revoked_sessions"
REVOKED_SESSION_LIVE = (
    "SELECT seq, session_id, until FROM revoked_sessions"
    " WHERE until > :now AND (until > :until OR (until = :until AND seq > :seq)) ORDER BY until, seq LIMIT :limit"
)
REVOKED_SESSION_SINCE = "SELECT seq, session_id, until FROM revoked_sessions WHERE seq > ? ORDER BY seq LIMIT ?"
REVOKED_SESSION_PURGE = (
    "DELETE FROM revoked_sessions"
    " WHERE seq IN (SELECT seq FROM revoked_sessions WHERE until < ? ORDER BY until LIMIT ?)"
)


class SqliteRevokedSessions(_Repository):
    async def add(self, session_ids: Sequence[str], at: datetime, until: datetime) -> None:
        at_text, until_text = format_timestamp(at), format_timestamp(until)
        await self._session.executemany(
            REVOKED_SESSION_INSERT, [(session_id, at_text, until_text) for session_id in session_ids]
        )

    async def changes(self, cursor: str | None, now: datetime, limit: int) -> SessionChanges:
        # Cursors: "load <top> <until> <seq>" while loading the live records, "since <seq>" after.
        if cursor is None:
            ((top,),) = await self._session.fetchall(REVOKED_SESSION_TOP)
            cursor = f"load {top}  0"
        parts = cursor.split(" ")
        if parts[0] == "load" and len(parts) == 4:
            params = {"now": format_timestamp(now), "until": parts[2], "seq": int(parts[3]), "limit": limit}
            rows = await self._session.fetchall(REVOKED_SESSION_LIVE, params)
            ended = [EndedSession(row[1], parse_timestamp(row[2])) for row in rows]
            if len(rows) < limit:
                return SessionChanges(ended, f"since {parts[1]}", complete=True)
            return SessionChanges(ended, f"load {parts[1]} {rows[-1][2]} {rows[-1][0]}", complete=False)
        if parts[0] != "since" or len(parts) != 2 or not parts[1].isdigit():
            raise ValueError(f"not a cursor of this store: {cursor!r}")
        rows = await self._session.fetchall(REVOKED_SESSION_SINCE, (int(parts[1]), limit))
        now_text = format_timestamp(now)
        ended = [EndedSession(row[1], parse_timestamp(row[2])) for row in rows if row[2] > now_text]
        last = rows[-1][0] if rows else int(parts[1])  # past the expired ones too: they were scanned
        return SessionChanges(ended, f"since {last}", complete=len(rows) < limit)

    async def purge(self, before: datetime, limit: int) -> int:
        return await self._session.execute(REVOKED_SESSION_PURGE, (format_timestamp(before), limit))


# Personal API keys. Scopes are stored space-separated, in the order of SCOPES.
_API_KEY_COLUMNS = "id, user_id, name, scopes, secret_digest, created_at, expires_at, last_used_at, revoked_at"
API_KEY_INSERT = f"INSERT INTO api_keys ({_API_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
API_KEY_GET = f"SELECT {_API_KEY_COLUMNS} FROM api_keys WHERE id = ?"
API_KEY_GET_BY_DIGEST = f"SELECT {_API_KEY_COLUMNS} FROM api_keys WHERE secret_digest = ?"
API_KEY_UPDATE = "UPDATE api_keys SET last_used_at = ?, revoked_at = ? WHERE id = ?"
API_KEY_RECORD_USE = "UPDATE api_keys SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at <= ?)"
#: Keyed by which filters are set: (user_id,).
API_KEY_LIST = _list_statements(_API_KEY_COLUMNS, "api_keys", "id < :after", "id DESC", ("user_id",))


def _api_key(row: tuple[Any, ...]) -> ApiKey:
    return ApiKey(
        id=row[0],
        user_id=row[1],
        name=row[2],
        scopes=frozenset(row[3].split()),
        secret_digest=row[4],
        created_at=parse_timestamp(row[5]),
        expires_at=parse_timestamp(row[6]),
        last_used_at=_optional_timestamp(row[7]),
        revoked_at=_optional_timestamp(row[8]),
    )


class SqliteApiKeyRepository(_Repository):
    async def add(self, key: ApiKey) -> None:
        await self._session.execute(
            API_KEY_INSERT,
            (
                key.id,
                key.user_id,
                key.name,
                format_scopes(key.scopes),
                key.secret_digest,
                format_timestamp(key.created_at),
                format_timestamp(key.expires_at),
                _optional_format(key.last_used_at),
                _optional_format(key.revoked_at),
            ),
        )

    async def get(self, key_id: str) -> ApiKey | None:
        rows = await self._session.fetchall(API_KEY_GET, (key_id,))
        return _api_key(rows[0]) if rows else None

    async def get_by_digest(self, digest: str) -> ApiKey | None:
        rows = await self._session.fetchall(API_KEY_GET_BY_DIGEST, (digest,))
        return _api_key(rows[0]) if rows else None

    async def list(self, page: PageRequest, filter: ApiKeyFilter) -> Page[ApiKey]:
        filters = {"user_id": filter.user_id}
        return await _filtered_list(self._session, API_KEY_LIST, "api_keys", filters, page, _api_key, descending=True)

    async def update(self, key: ApiKey) -> None:
        await self._session.execute(
            API_KEY_UPDATE, (_optional_format(key.last_used_at), _optional_format(key.revoked_at), key.id)
        )

    async def record_use(self, key_id: str, at: datetime, *, unless_since: datetime) -> bool:
        changed = await self._session.execute(
            API_KEY_RECORD_USE, (format_timestamp(at), key_id, format_timestamp(unless_since))
        )
        return changed == 1


# The audit log.
_AUDIT_COLUMNS = "id, at, actor_id, action, object_type, object_id, source_ip, details"
AUDIT_INSERT = f"INSERT INTO audit_log ({_AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_AUDIT_FILTERS = ("actor_id", "action", "object_type", "object_id")


#: Keyed by which filters are set: (actor_id, action, object_type, object_id).
AUDIT_LIST = _list_statements(_AUDIT_COLUMNS, "audit_log", "id < :after", "id DESC", _AUDIT_FILTERS)


def _audit_entry(row: tuple[Any, ...]) -> AuditEntry:
    return AuditEntry(
        id=row[0],
        at=parse_timestamp(row[1]),
        actor_id=row[2],
        action=row[3],
        object_type=row[4],
        object_id=row[5],
        source_ip=row[6],
        details=orjson.loads(row[7]),
    )


class SqliteAuditLog(_Repository):
    async def append(self, entry: AuditEntry) -> None:
        await self._session.execute(
            AUDIT_INSERT,
            (
                entry.id,
                format_timestamp(entry.at),
                entry.actor_id,
                entry.action,
                entry.object_type,
                entry.object_id,
                entry.source_ip,
                orjson.dumps(entry.details).decode(),
            ),
        )

    async def list(self, page: PageRequest, filter: AuditFilter) -> Page[AuditEntry]:
        values = (filter.actor_id, filter.action, filter.object_type, filter.object_id)
        filters = dict(zip(_AUDIT_FILTERS, values, strict=True))
        return await _filtered_list(self._session, AUDIT_LIST, "audit", filters, page, _audit_entry, descending=True)


# Orders. An order and its lines are read by one statement: the lines come as one JSON
# array from a correlated subquery (a search of the lines' primary key), sorted here by
# line number, so that a page of orders is one statement and not one more per order.
_ORDER_COLUMNS = (
    "id, customer_id, status, subtotal, total, amount_paid, amount_refunded, currency,"
    " created_at, updated_at, expires_at, version"
)
_ORDER_FIELDS = (
    ", ".join(f"o.{c}" for c in _ORDER_COLUMNS.split(", "))
    + ", (SELECT json_group_array(json_array(l.line_no, l.product_id, l.sku, l.name, l.unit_price, l.quantity))"
    " FROM order_lines AS l WHERE l.order_id = o.id)"
)
ORDER_INSERT = f"INSERT INTO orders ({_ORDER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
ORDER_LINE_INSERT = (
    "INSERT INTO order_lines (order_id, line_no, product_id, sku, name, unit_price, quantity)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
ORDER_GET = f"SELECT {_ORDER_FIELDS} FROM orders AS o WHERE o.id = ?"
ORDER_GET_MANY = f"SELECT {_ORDER_FIELDS} FROM orders AS o WHERE o.id IN (SELECT value FROM json_each(?))"
# Optimistic concurrency: the row must still be at the version the caller read; it moves on.
ORDER_UPDATE = (
    "UPDATE orders SET status = ?, amount_paid = ?, amount_refunded = ?, updated_at = ?, expires_at = ?,"
    " version = version + 1 WHERE id = ? AND version = ?"
)
# The partial index orders_pending_expiry holds exactly the orders awaiting payment, in
# deadline order; left to itself the planner prefers orders_status_id and then sorts every
# pending order, hence INDEXED BY. (NULL deadlines never pass <=.)
ORDER_DUE_FOR_EXPIRY = (
    "SELECT id FROM orders INDEXED BY orders_pending_expiry"
    " WHERE status = 'pending_payment' AND expires_at <= ? ORDER BY expires_at LIMIT ?"
)


# The dashboard's figures. orders_created_at (migration 10) covers the summary: a range of
# the index from ``since``, no row read; orders_status_id covers the count of one status.
ORDER_SUMMARY_SINCE = (
    "SELECT count(*), coalesce(sum(total), 0) FROM orders"
    " WHERE created_at >= ? AND currency = ? AND status NOT IN ('cancelled', 'expired')"
)
ORDER_COUNT_WITH_STATUS = "SELECT count(*) FROM orders WHERE status = ?"

#: Keyed by which filters are set: (customer_id, status).
ORDER_LIST = _list_statements(
    _ORDER_FIELDS, "orders AS o", "o.id < :after", "o.id DESC", ("customer_id", "status"), "o."
)


def _order(row: tuple[Any, ...]) -> Order:
    currency = row[7]
    lines = sorted(orjson.loads(row[12]))
    return Order(
        id=row[0],
        customer_id=row[1],
        status=OrderStatus(row[2]),
        lines=[OrderLine(line[1], line[2], line[3], Money(line[4], currency), line[5]) for line in lines],
        subtotal=Money(row[3], currency),
        total=Money(row[4], currency),
        amount_paid=row[5],
        amount_refunded=row[6],
        currency=currency,
        created_at=parse_timestamp(row[8]),
        updated_at=parse_timestamp(row[9]),
        expires_at=_optional_timestamp(row[10]),
        version=row[11],
    )


def _order_row(order: Order) -> Row:
    return (
        order.id,
        order.customer_id,
        order.status.value,
        order.subtotal.amount,
        order.total.amount,
        order.amount_paid,
        order.amount_refunded,
        order.currency,
        format_timestamp(order.created_at),
        format_timestamp(order.updated_at),
        _optional_format(order.expires_at),
        order.version,
    )


def _line_rows(order: Order) -> builtins.list[Row]:
    return [
        (order.id, n, line.product_id, line.sku, line.name, line.unit_price.amount, line.quantity)
        for n, line in enumerate(order.lines)
    ]


class SqliteOrderRepository(_Repository):
    async def add(self, order: Order) -> None:
        await self._session.execute(ORDER_INSERT, _order_row(order))
        await self._session.executemany(ORDER_LINE_INSERT, _line_rows(order))

    async def add_many(self, orders: Sequence[Order]) -> None:
        await self._session.executemany(ORDER_INSERT, [_order_row(order) for order in orders])
        await self._session.executemany(ORDER_LINE_INSERT, [row for order in orders for row in _line_rows(order)])

    async def get(self, order_id: str) -> Order | None:
        rows = await self._session.fetchall(ORDER_GET, (order_id,))
        return _order(rows[0]) if rows else None

    async def get_many(self, order_ids: Sequence[str]) -> builtins.list[Order]:
        if not order_ids:
            return []
        return [_order(row) for row in await self._session.fetchall(ORDER_GET_MANY, (orjson.dumps(list(order_ids)),))]

    async def update(self, order: Order) -> None:
        changed = await self._session.execute(
            ORDER_UPDATE,
            (
                order.status.value,
                order.amount_paid,
                order.amount_refunded,
                format_timestamp(order.updated_at),
                _optional_format(order.expires_at),
                order.id,
                order.version,
            ),
        )
        moved(changed, order, "The order")

    async def list(self, page: PageRequest, filter: OrderFilter) -> Page[Order]:
        filters = {
            "customer_id": filter.customer_id,
            "status": None if filter.status is None else filter.status.value,
        }
        return await _filtered_list(self._session, ORDER_LIST, "orders", filters, page, _order, descending=True)

    async def due_for_expiry(self, now: datetime, limit: int) -> builtins.list[str]:
        rows = await self._session.fetchall(ORDER_DUE_FOR_EXPIRY, (format_timestamp(now), limit))
        return [row[0] for row in rows]

    async def summary_since(self, since: datetime, currency: str) -> OrderSummary:
        ((count, total),) = await self._session.fetchall(ORDER_SUMMARY_SINCE, (format_timestamp(since), currency))
        return OrderSummary(orders=int(count), total=int(total))

    async def count_with_status(self, status: OrderStatus) -> int:
        ((count,),) = await self._session.fetchall(ORDER_COUNT_WITH_STATUS, (status.value,))
        return int(count)


# Payments.
_PAYMENT_COLUMNS = (
    "id, order_id, method, provider, status, amount, currency, provider_reference, client_secret, next_action,"
    " failure_code, reference, payment_method, created_at, updated_at, version"
)
PAYMENT_INSERT = f"INSERT INTO payments ({_PAYMENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
PAYMENT_GET = f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE id = ?"
PAYMENT_GET_BY_PROVIDER_REFERENCE = f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE provider_reference = ?"
PAYMENT_LIST_FOR_ORDER = f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE order_id = ? ORDER BY id"
PAYMENT_UPDATE = (
    "UPDATE payments SET status = ?, provider_reference = ?, client_secret = ?, next_action = ?, failure_code = ?,"
    " updated_at = ?, version = version + 1 WHERE id = ? AND version = ?"
)


def _optional_json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _payment(row: tuple[Any, ...]) -> Payment:
    return Payment(
        id=row[0],
        order_id=row[1],
        method=PaymentMethod(row[2]),
        provider=row[3],
        status=PaymentStatus(row[4]),
        amount=Money(row[5], row[6]),
        provider_reference=row[7],
        client_secret=row[8],
        next_action=None if row[9] is None else orjson.loads(row[9]),
        failure_code=row[10],
        reference=row[11],
        payment_method=row[12],
        created_at=parse_timestamp(row[13]),
        updated_at=parse_timestamp(row[14]),
        version=row[15],
    )


class SqlitePaymentRepository(_Repository):
    async def add(self, payment: Payment) -> None:
        try:
            await self._session.execute(
                PAYMENT_INSERT,
                (
                    payment.id,
                    payment.order_id,
                    payment.method.value,
                    payment.provider,
                    payment.status.value,
                    payment.amount.amount,
                    payment.amount.currency,
                    payment.provider_reference,
                    payment.client_secret,
                    _optional_json(payment.next_action),
                    payment.failure_code,
                    payment.reference,
                    payment.payment_method,
                    format_timestamp(payment.created_at),
                    format_timestamp(payment.updated_at),
                    payment.version,
                ),
            )
        except sqlite3.IntegrityError as exc:
            if _is_unique_violation(exc, "payments.provider_reference"):
                raise ProviderReferenceTaken(payment.provider_reference or "") from None
            raise

    async def add_many(self, payments: Sequence[Payment]) -> None:
        for payment in payments:  # one by one: see SqliteProductRepository.add_many
            await self.add(payment)

    async def get(self, payment_id: str) -> Payment | None:
        rows = await self._session.fetchall(PAYMENT_GET, (payment_id,))
        return _payment(rows[0]) if rows else None

    async def get_by_provider_reference(self, reference: str) -> Payment | None:
        rows = await self._session.fetchall(PAYMENT_GET_BY_PROVIDER_REFERENCE, (reference,))
        return _payment(rows[0]) if rows else None

    async def list_for_order(self, order_id: str) -> builtins.list[Payment]:
        return [_payment(row) for row in await self._session.fetchall(PAYMENT_LIST_FOR_ORDER, (order_id,))]

    async def update(self, payment: Payment) -> None:
        try:
            changed = await self._session.execute(
                PAYMENT_UPDATE,
                (
                    payment.status.value,
                    payment.provider_reference,
                    payment.client_secret,
                    _optional_json(payment.next_action),
                    payment.failure_code,
                    format_timestamp(payment.updated_at),
                    payment.id,
                    payment.version,
                ),
            )
        except sqlite3.IntegrityError as exc:
            if _is_unique_violation(exc, "payments.provider_reference"):
                raise ProviderReferenceTaken(payment.provider_reference or "") from None
            raise
        moved(changed, payment, "The payment")


# Refunds.
_REFUND_COLUMNS = (
    "id, payment_id, order_id, amount, currency, reason, status, provider_reference, failure_code,"
    " created_at, updated_at, version"
)
REFUND_INSERT = f"INSERT INTO refunds ({_REFUND_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
REFUND_GET = f"SELECT {_REFUND_COLUMNS} FROM refunds WHERE id = ?"
REFUND_LIST_FOR_ORDER = f"SELECT {_REFUND_COLUMNS} FROM refunds WHERE order_id = ? ORDER BY id"
REFUND_LIST_FOR_PAYMENT = f"SELECT {_REFUND_COLUMNS} FROM refunds WHERE payment_id = ? ORDER BY id"
# The partial index refunds_unsent (migration 5) holds exactly these rows, in deadline
# order; without INDEXED BY the planner may prefer refunds_status_id (every pending refund,
# then sorted).
REFUND_LIST_UNSENT = (
    f"SELECT {_REFUND_COLUMNS} FROM refunds INDEXED BY refunds_unsent"
    " WHERE status = 'pending' AND provider_reference IS NULL AND created_at > ? AND created_at < ?"
    " ORDER BY created_at LIMIT ?"
)
# refunds_status_id (migration 10) covers it.
REFUND_COUNT_PENDING = "SELECT count(*) FROM refunds WHERE status = 'pending'"
REFUND_UPDATE = (
    "UPDATE refunds SET status = ?, provider_reference = ?, failure_code = ?, updated_at = ?,"
    " version = version + 1 WHERE id = ? AND version = ?"
)


def _refund(row: tuple[Any, ...]) -> Refund:
    return Refund(
        id=row[0],
        payment_id=row[1],
        order_id=row[2],
        amount=Money(row[3], row[4]),
        reason=row[5],
        status=RefundStatus(row[6]),
        provider_reference=row[7],
        failure_code=row[8],
        created_at=parse_timestamp(row[9]),
        updated_at=parse_timestamp(row[10]),
        version=row[11],
    )


class SqliteRefundRepository(_Repository):
    async def add(self, refund: Refund) -> None:
        await self._session.execute(
            REFUND_INSERT,
            (
                refund.id,
                refund.payment_id,
                refund.order_id,
                refund.amount.amount,
                refund.amount.currency,
                refund.reason,
                refund.status.value,
                refund.provider_reference,
                refund.failure_code,
                format_timestamp(refund.created_at),
                format_timestamp(refund.updated_at),
                refund.version,
            ),
        )

    async def add_many(self, refunds: Sequence[Refund]) -> None:
        for refund in refunds:  # one by one: see SqliteProductRepository.add_many
            await self.add(refund)

    async def get(self, refund_id: str) -> Refund | None:
        rows = await self._session.fetchall(REFUND_GET, (refund_id,))
        return _refund(rows[0]) if rows else None

    async def list_for_order(self, order_id: str) -> builtins.list[Refund]:
        return [_refund(row) for row in await self._session.fetchall(REFUND_LIST_FOR_ORDER, (order_id,))]

    async def list_for_payment(self, payment_id: str) -> builtins.list[Refund]:
        return [_refund(row) for row in await self._session.fetchall(REFUND_LIST_FOR_PAYMENT, (payment_id,))]

    async def list_unsent(self, created_after: datetime, created_before: datetime, limit: int) -> builtins.list[Refund]:
        window = (format_timestamp(created_after), format_timestamp(created_before), limit)
        return [_refund(row) for row in await self._session.fetchall(REFUND_LIST_UNSENT, window)]

    async def count_pending(self) -> int:
        ((count,),) = await self._session.fetchall(REFUND_COUNT_PENDING, ())
        return int(count)

    async def update(self, refund: Refund) -> None:
        changed = await self._session.execute(
            REFUND_UPDATE,
            (
                refund.status.value,
                refund.provider_reference,
                refund.failure_code,
                format_timestamp(refund.updated_at),
                refund.id,
                refund.version,
            ),
        )
        moved(changed, refund, "The refund")


# The outbox.
_OUTBOX_COLUMNS = "id, type, aggregate_type, aggregate_id, payload, occurred_at"
OUTBOX_INSERT = f"INSERT INTO outbox ({_OUTBOX_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
# The condition is the partial index's own (outbox_pending), which is what lets SQLite use
# it: the index holds only undelivered events, so reading it in order reads just those.
OUTBOX_LIST_PENDING = f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE delivered_at IS NULL ORDER BY id LIMIT ?"
OUTBOX_MARK_DELIVERED = "UPDATE outbox SET delivered_at = ? WHERE id = ? AND delivered_at IS NULL"
# Each half reads its own partial index (migration 6) from its oldest end, so a purge costs
# what it deletes, however long the table.
OUTBOX_PURGE_DELIVERED = (
    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE delivered_at < ? ORDER BY delivered_at LIMIT ?)"
)
OUTBOX_PURGE_UNDELIVERED = (
    "DELETE FROM outbox WHERE id IN"
    " (SELECT id FROM outbox WHERE delivered_at IS NULL AND occurred_at < ? ORDER BY occurred_at LIMIT ?)"
)


def _event(row: tuple[Any, ...]) -> DomainEvent:
    return DomainEvent(
        id=row[0],
        type=row[1],
        aggregate_type=row[2],
        aggregate_id=row[3],
        payload=orjson.loads(row[4]),
        occurred_at=parse_timestamp(row[5]),
    )


class SqliteOutbox(_Repository):
    async def append(self, event: DomainEvent) -> None:
        await self._session.execute(
            OUTBOX_INSERT,
            (
                event.id,
                event.type,
                event.aggregate_type,
                event.aggregate_id,
                orjson.dumps(event.payload).decode(),
                format_timestamp(event.occurred_at),
            ),
        )

    async def list_pending(self, limit: int) -> builtins.list[DomainEvent]:
        return [_event(row) for row in await self._session.fetchall(OUTBOX_LIST_PENDING, (limit,))]

    async def mark_delivered(self, event_id: str, at: datetime) -> bool:
        return (await self._session.execute(OUTBOX_MARK_DELIVERED, (format_timestamp(at), event_id))) == 1

    async def purge(self, before: datetime, limit: int) -> int:
        cutoff = format_timestamp(before)
        purged = await self._session.execute(OUTBOX_PURGE_DELIVERED, (cutoff, limit))
        if purged < limit:
            purged += await self._session.execute(OUTBOX_PURGE_UNDELIVERED, (cutoff, limit - purged))
        return purged


# Provider events: the primary key is the guard; a second insert of the same event does nothing.
PROVIDER_EVENT_INSERT = (
    "INSERT INTO provider_events (provider, event_id, received_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
)


class SqliteProviderEvents(_Repository):
    async def record(self, provider: str, event_id: str, at: datetime) -> bool:
        changed = await self._session.execute(PROVIDER_EVENT_INSERT, (provider, event_id, format_timestamp(at)))
        return changed == 1


# Idempotency keys. A claim is inserted in the transaction of its effect (see
# SqliteUnitOfWork.commit); an expired row with the same key is replaced in the same step.
_IDEMPOTENCY_COLUMNS = "scope, key, fingerprint, created_at, status, headers, body"
IDEMPOTENCY_GET = f"SELECT {_IDEMPOTENCY_COLUMNS} FROM idempotency_keys WHERE scope = ? AND key = ?"
IDEMPOTENCY_CLAIM = (
    "INSERT INTO idempotency_keys (scope, key, fingerprint, created_at) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (scope, key) DO UPDATE SET fingerprint = excluded.fingerprint, created_at = excluded.created_at,"
    " status = NULL, headers = NULL, body = NULL WHERE idempotency_keys.created_at < ?"
)
IDEMPOTENCY_COMPLETE = "UPDATE idempotency_keys SET status = ?, headers = ?, body = ? WHERE scope = ? AND key = ?"
IDEMPOTENCY_PURGE = (
    "DELETE FROM idempotency_keys WHERE (scope, key) IN"
    " (SELECT scope, key FROM idempotency_keys WHERE created_at < ? ORDER BY created_at LIMIT ?)"
)
IDEMPOTENCY_RELEASE = "DELETE FROM idempotency_keys WHERE scope = ? AND key = ?"


class SqliteIdempotencyRepository(_Repository):
    async def get(self, scope: str, key: str) -> StoredRequest | None:
        rows = await self._session.fetchall(IDEMPOTENCY_GET, (scope, key))
        if not rows:
            return None
        scope, key, fingerprint, created_at, status, headers, body = rows[0]
        return StoredRequest(
            scope=scope,
            key=key,
            fingerprint=fingerprint,
            created_at=parse_timestamp(created_at),
            status=status,
            headers=orjson.loads(headers) if headers else {},
            body=body or b"",
        )

    async def claim(self, claim: IdempotencyClaim, at: datetime, expired_before: datetime) -> bool:
        """Record the claim; False if the key is held by another live claim."""
        changed = await self._session.execute(
            IDEMPOTENCY_CLAIM,
            (claim.scope, claim.key, claim.fingerprint, format_timestamp(at), format_timestamp(expired_before)),
        )
        return changed == 1

    async def complete(self, scope: str, key: str, status: int, headers: dict[str, str], body: bytes) -> None:
        await self._session.execute(IDEMPOTENCY_COMPLETE, (status, orjson.dumps(headers).decode(), body, scope, key))

    async def release(self, scope: str, key: str) -> None:
        await self._session.execute(IDEMPOTENCY_RELEASE, (scope, key))

    async def purge(self, before: datetime, limit: int) -> int:
        return await self._session.execute(IDEMPOTENCY_PURGE, (format_timestamp(before), limit))


# OAuth clients. Their lists are JSON arrays of text, in the domain's order.
_OAUTH_CLIENT_COLUMNS = (
    "id, name, type, redirect_uris, grant_types, scopes, status, secret_digest, secret_rotated_at,"
    " created_at, updated_at, created_by"
)
OAUTH_CLIENT_INSERT = f"INSERT INTO oauth_clients ({_OAUTH_CLIENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
OAUTH_CLIENT_GET = f"SELECT {_OAUTH_CLIENT_COLUMNS} FROM oauth_clients WHERE id = ?"
OAUTH_CLIENT_UPDATE = (
    "UPDATE oauth_clients SET name = ?, redirect_uris = ?, grant_types = ?, scopes = ?, status = ?,"
    " secret_digest = ?, secret_rotated_at = ?, updated_at = ? WHERE id = ?"
)
#: Keyed by which filters are set: (status,).
OAUTH_CLIENT_LIST = _list_statements(_OAUTH_CLIENT_COLUMNS, "oauth_clients", "id > :after", "id", ("status",))


def _oauth_client(row: tuple[Any, ...]) -> OAuthClient:
    return OAuthClient(
        id=row[0],
        name=row[1],
        type=ClientType(row[2]),
        redirect_uris=tuple(orjson.loads(row[3])),
        grant_types=tuple(GrantType(g) for g in orjson.loads(row[4])),
        scopes=tuple(orjson.loads(row[5])),
        status=ClientStatus(row[6]),
        secret_digest=row[7],
        secret_rotated_at=_optional_timestamp(row[8]),
        created_at=parse_timestamp(row[9]),
        updated_at=parse_timestamp(row[10]),
        created_by=row[11],
    )


def _json_list(values: Sequence[str]) -> str:
    return orjson.dumps([str(value) for value in values]).decode()


class SqliteOAuthClientRepository(_Repository):
    async def add(self, client: OAuthClient) -> None:
        await self._session.execute(
            OAUTH_CLIENT_INSERT,
            (
                client.id,
                client.name,
                client.type.value,
                _json_list(client.redirect_uris),
                _json_list(client.grant_types),
                _json_list(client.scopes),
                client.status.value,
                client.secret_digest,
                _optional_format(client.secret_rotated_at),
                format_timestamp(client.created_at),
                format_timestamp(client.updated_at),
                client.created_by,
            ),
        )

    async def get(self, client_id: str) -> OAuthClient | None:
        # Writes are serialized (one writer, BEGIN IMMEDIATE): what a write unit reads is
        # its own until it ends, as the port asks.
        rows = await self._session.fetchall(OAUTH_CLIENT_GET, (client_id,))
        return _oauth_client(rows[0]) if rows else None

    async def update(self, client: OAuthClient) -> None:
        await self._session.execute(
            OAUTH_CLIENT_UPDATE,
            (
                client.name,
                _json_list(client.redirect_uris),
                _json_list(client.grant_types),
                _json_list(client.scopes),
                client.status.value,
                client.secret_digest,
                _optional_format(client.secret_rotated_at),
                format_timestamp(client.updated_at),
                client.id,
            ),
        )

    async def list(self, page: PageRequest, filter: OAuthClientFilter) -> Page[OAuthClient]:
        filters = {"status": None if filter.status is None else filter.status.value}
        return await _filtered_list(
            self._session, OAUTH_CLIENT_LIST, "oauth_clients", filters, page, _oauth_client, descending=False
        )

"""PostgreSQL repositories: the Protocols of core/ports/repositories.py over asyncpg.

Statements are constant strings (lists with optional filters have one per combination,
made once and cached), which asyncpg prepares once per connection. In a write unit, reads
of the entities a use case may change (users, products, orders, payments, refunds) lock
their rows FOR UPDATE until the unit ends: see unit_of_work.py for why.

Lists are keyset-paginated like SQLite's, ``(key, id) > ($key, $after)`` with one more row
than asked for; the cursors are the same opaque, bound cursors (adapters/cursors.py).
"""

from __future__ import annotations

import builtins
import functools
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
import orjson
from asyncpg import Record

from adapters import cursors
from adapters.postgres.search import tsquery, words
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

if TYPE_CHECKING:
    from adapters.postgres.unit_of_work import PgSession

T = TypeVar("T")


class _Repository:
    def __init__(self, session: PgSession):
        self._session = session

    def _lock(self, sql: str, of: str = "") -> str:
        """The statement as a write unit runs it: its rows locked until the unit ends."""
        if not self._session.locking:
            return sql
        return f"{sql} FOR UPDATE{f' OF {of}' if of else ''}"

    async def _lock_order_first(self, sql: str, key: str) -> None:
        """In a write unit, lock the order that ``sql`` names by ``key`` (a payment's or a
        refund's) before the payment or refund itself is read and locked: see ORDER_LOCK."""
        if self._session.locking:
            await self._session.fetch(sql, key)

    async def _lock_order(self, order_id: str) -> None:
        if self._session.locking and order_id not in self._session.locked_orders:
            await self._session.fetch(ORDER_LOCK, order_id)
            self._session.locked_orders.add(order_id)


def _page(
    rows: Sequence[Record],
    page: PageRequest,
    build: Callable[[Record], T],
    key: Callable[[Record], list[Any]],
    bound_to: str,
) -> Page[T]:
    items = [build(row) for row in rows[: page.limit]]
    if len(rows) > page.limit:
        return Page(items=items, next_after=cursors.encode(bound_to, key(rows[page.limit - 1])))
    return Page(items=items, next_after=None)


@functools.cache
def _filtered_list_sql(columns: str, source: str, filters: tuple[str, ...], descending: bool, first: bool) -> str:
    """Parameters: the limit, then the after (unless ``first``), then the filters' values."""
    where = [] if first else [f"id {'<' if descending else '>'} $2"]
    where += [f"{name} = ${n}" for n, name in enumerate(filters, start=2 if first else 3)]
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    return f"SELECT {columns} FROM {source}{clause} ORDER BY id{' DESC' if descending else ''} LIMIT $1"


async def _filtered_list(
    session: PgSession,
    columns: str,
    source: str,
    name: str,
    filters: Mapping[str, str | None],
    page: PageRequest,
    build: Callable[[Record], T],
    *,
    descending: bool,
) -> Page[T]:
    """A page of a list in id order with optional equality filters (users, orders, audit)."""
    bound_to = cursors.binding(name, *filters.values())
    given = {key: value for key, value in filters.items() if value is not None}
    args: list[Any] = [page.limit + 1]
    if page.after is not None:
        args += cursors.decode(page.after, bound_to, (str,))
    sql = _filtered_list_sql(columns, source, tuple(given), descending, page.after is None)
    rows = await session.fetch(sql, *args, *given.values())
    return _page(rows, page, build, lambda row: [row[0]], bound_to)


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows as columns, for a statement that inserts many rows from arrays (unnest)."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


def _constraint(exc: asyncpg.UniqueViolationError) -> str:
    return exc.constraint_name or ""


# Users.
_USER_COLUMNS = "id, email, password_hash, role, status, created_at, updated_at, email_skeleton"
# A taken email (or skeleton) inserts nothing rather than failing: the transaction goes on.
USER_INSERT = f"INSERT INTO users ({_USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING"
USER_GET = f"SELECT {_USER_COLUMNS} FROM users WHERE id = $1"
USER_GET_BY_EMAIL = f"SELECT {_USER_COLUMNS} FROM users WHERE email = $1"
USER_UPDATE = "UPDATE users SET role = $1, status = $2, password_hash = $3, updated_at = $4 WHERE id = $5"


def _user(row: Record) -> User:
    return User(
        id=row[0],
        email=row[1],
        password_hash=row[2],
        role=Role(row[3]),
        status=UserStatus(row[4]),
        created_at=row[5],
        updated_at=row[6],
        email_skeleton=row[7] or "",
    )


class PostgresUserRepository(_Repository):
    async def add(self, user: User) -> None:
        added = await self._session.execute(
            USER_INSERT,
            user.id,
            user.email,
            user.password_hash,
            user.role.value,
            user.status.value,
            user.created_at,
            user.updated_at,
            user.email_skeleton or None,
        )
        if added != 1:  # ids are unique by making: the email or its skeleton is taken
            raise EmailTaken()

    async def get(self, user_id: str) -> User | None:
        row = await self._session.fetchrow(self._lock(USER_GET), user_id)
        return None if row is None else _user(row)

    async def get_by_email(self, email: str) -> User | None:
        row = await self._session.fetchrow(self._lock(USER_GET_BY_EMAIL), email)
        return None if row is None else _user(row)

    async def update(self, user: User) -> None:
        await self._session.execute(
            USER_UPDATE, user.role.value, user.status.value, user.password_hash, user.updated_at, user.id
        )

    async def list(self, page: PageRequest, filter: UserFilter) -> Page[User]:
        filters = {
            "role": None if filter.role is None else filter.role.value,
            "status": None if filter.status is None else filter.status.value,
            "email": filter.email,
        }
        return await _filtered_list(
            self._session, _USER_COLUMNS, "users", "users", filters, page, _user, descending=False
        )

    async def count(self, filter: UserFilter) -> int:
        where = ["TRUE"]
        args: list[Any] = []
        for column, value in (
            ("role", None if filter.role is None else filter.role.value),
            ("status", None if filter.status is None else filter.status.value),
            ("email", filter.email),
        ):
            if value is not None:
                args.append(value)
                where.append(f"{column} = ${len(args)}")
        # In a write unit the counted rows are locked: a concurrent unit that counts the same
        # users waits, then counts again what this one committed (the port's promise).
        counted = self._lock(f"SELECT 1 FROM users WHERE {' AND '.join(where)}")
        return int(await self._session.fetchval(f"SELECT count(*) FROM ({counted}) AS counted", *args))


# Products.
_PRODUCT_COLUMNS = "id, sku, name, description, price, currency, stock, active, created_at, updated_at, version"
_P_COLUMNS = ", ".join(f"p.{c}" for c in _PRODUCT_COLUMNS.split(", "))
PRODUCT_INSERT = (
    f"INSERT INTO products ({_PRODUCT_COLUMNS}, search)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, array_to_tsvector($12::text[])) ON CONFLICT DO NOTHING"
)
# Many products in one statement: a column array each (the words joined by spaces, which
# no word holds), a taken sku skipped; the skus inserted say which (see add_many).
PRODUCT_INSERT_MANY = (
    f"INSERT INTO products ({_PRODUCT_COLUMNS}, search)"
    f" SELECT {_PRODUCT_COLUMNS}, array_to_tsvector(string_to_array(words, ' ')) FROM unnest($1::text[],"
    " $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::bigint[], $8::boolean[], $9::timestamptz[],"
    f" $10::timestamptz[], $11::bigint[], $12::text[]) AS p ({_PRODUCT_COLUMNS}, words)"
    " ON CONFLICT DO NOTHING RETURNING sku"
)
PRODUCT_GET = f"SELECT {_PRODUCT_COLUMNS} FROM products WHERE id = $1"
PRODUCT_GET_BY_SKU = f"SELECT {_PRODUCT_COLUMNS} FROM products WHERE sku = $1"
# Optimistic concurrency: the row must still be at the version the caller read; it moves on.
PRODUCT_UPDATE = (
    "UPDATE products SET sku = $1, name = $2, description = $3, price = $4, currency = $5, stock = $6,"
    " active = $7, updated_at = $8, search = array_to_tsvector($9::text[]), version = version + 1"
    " WHERE id = $10 AND version = $11"
)
# When the words did not change (every order placed, cancelled or expired changes only the
# stock), the search vector is left alone.
PRODUCT_UPDATE_FIELDS = (
    "UPDATE products SET price = $1, currency = $2, stock = $3, active = $4, updated_at = $5,"
    " version = version + 1 WHERE id = $6 AND version = $7"
)
PRODUCT_DELETE = "DELETE FROM products WHERE id = $1"
# In id order, so that two units locking some of the same products never deadlock.
PRODUCT_GET_MANY = f"SELECT {_PRODUCT_COLUMNS} FROM products WHERE id = ANY($1::text[]) ORDER BY id"
PRODUCT_GET_MANY_BY_SKU = f"SELECT {_PRODUCT_COLUMNS} FROM products WHERE sku = ANY($1::text[]) ORDER BY id"
#: Active products running out: a range of products_active_stock_id (migration 10), in its order.
PRODUCT_LOW_STOCK = f"SELECT {_PRODUCT_COLUMNS} FROM products WHERE active AND stock <= $1 ORDER BY stock, id LIMIT $2"

#: How each sort is read: the sorted expression before the id (None: the id alone), whether
#: descending, and the types of its key in a cursor.
_SORTS: dict[ProductSort, tuple[str | None, bool, tuple[type, ...]]] = {
    ProductSort.ID: (None, False, (str,)),
    ProductSort.PRICE: ("p.price", False, (int, str)),
    ProductSort.PRICE_DESC: ("p.price", True, (int, str)),
    ProductSort.NAME: ("tillbox_name_key(p.name)", False, (str, str)),
    ProductSort.NAME_DESC: ("tillbox_name_key(p.name)", True, (str, str)),
    ProductSort.CREATED_AT: ("p.created_at", False, (str, str)),
    ProductSort.CREATED_AT_DESC: ("p.created_at", True, (str, str)),
}


@functools.cache
def _product_list_sql(
    columns: str, sort: ProductSort, first: bool, active: bool, price_min: bool, price_max: bool, text: bool
) -> tuple[str, tuple[str, ...]]:
    """The statement and the names of its parameters, in order."""
    key, descending, _ = _SORTS[sort]
    params: list[str] = []

    def param(name: str, cast: str = "") -> str:
        params.append(name)
        return f"${len(params)}{cast}"

    where = []
    beyond = "<" if descending else ">"
    if not first:
        if key is None:
            where.append(f"p.id {beyond} {param('after')}")
        else:
            cast = "::timestamptz" if key == "p.created_at" else ""
            where.append(f"({key}, p.id) {beyond} ({param('sort_key', cast)}, {param('after')})")
    if active:
        where.append(f"p.active = {param('active')}")
    if price_min:
        where.append(f"p.price >= {param('price_min')}")
    if price_max:
        where.append(f"p.price <= {param('price_max')}")
    if text:
        where.append(f"p.search @@ {param('match', '::tsquery')}")
    direction = " DESC" if descending else ""
    order = f"p.id{direction}" if key is None else f"{key}{direction}, p.id{direction}"
    selected = ", ".join(f"p.{c}" for c in columns.split(", "))
    if key is not None:
        selected += f", {key}"
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    sql = f"SELECT {selected} FROM products AS p{clause} ORDER BY {order} LIMIT {param('limit')}"
    return sql, tuple(params)


def _product(row: Record) -> Product:
    return Product(
        id=row[0],
        sku=row[1],
        name=row[2],
        description=row[3],
        price=Money(row[4], row[5]),
        stock=row[6],
        active=row[7],
        created_at=row[8],
        updated_at=row[9],
        version=row[10],
    )


def _product_version(row: Record) -> ProductVersion:
    return ProductVersion(row[0], row[1])


def _cursor_time(text: str) -> datetime:
    """A time from a cursor: only one this adapter wrote (UTC, within what the store keeps);
    an edited one is InvalidCursor, never a database error."""
    try:
        at = parse_timestamp(text)
    except ValueError:
        raise InvalidCursor() from None
    if at.tzinfo is None or at.utcoffset() != timedelta(0) or not 2 <= at.year <= 9998:
        raise InvalidCursor()
    return at


def _sort_key(value: Any) -> Any:
    return format_timestamp(value) if isinstance(value, datetime) else value


class PostgresProductRepository(_Repository):
    def __init__(self, session: PgSession):
        super().__init__(session)
        # The words of each product as this unit read them, by id: an update that leaves
        # them alone leaves the search vector alone.
        self._read: dict[str, tuple[str, str, str]] = {}

    def _remember(self, row: Record) -> Product:
        self._read[row[0]] = (row[1], row[2], row[3])
        return _product(row)

    async def add(self, product: Product) -> None:
        added = await self._session.execute(
            PRODUCT_INSERT,
            product.id,
            product.sku,
            product.name,
            product.description,
            product.price.amount,
            product.price.currency,
            product.stock,
            product.active,
            product.created_at,
            product.updated_at,
            product.version,
            words(product.name, product.sku, product.description),
        )
        if added != 1:  # ids are unique by making: the sku is taken
            raise SkuTaken(product.sku)

    async def add_many(self, products: Sequence[Product]) -> None:
        if not products:
            return
        columns = _columns(
            [
                (
                    p.id,
                    p.sku,
                    p.name,
                    p.description,
                    p.price.amount,
                    p.price.currency,
                    p.stock,
                    p.active,
                    p.created_at,
                    p.updated_at,
                    p.version,
                    " ".join(words(p.name, p.sku, p.description)),
                )
                for p in products
            ],
            12,
        )
        inserted = {row[0] for row in await self._session.fetch(PRODUCT_INSERT_MANY, *columns)}
        if len(inserted) != len(products):
            seen: set[str] = set()
            for product in products:  # the first that was not inserted, or came twice
                if product.sku not in inserted or product.sku in seen:
                    raise SkuTaken(product.sku)
                seen.add(product.sku)

    async def get(self, product_id: str) -> Product | None:
        row = await self._session.fetchrow(self._lock(PRODUCT_GET), product_id)
        return None if row is None else self._remember(row)

    async def get_by_sku(self, sku: str) -> Product | None:
        row = await self._session.fetchrow(self._lock(PRODUCT_GET_BY_SKU), sku)
        return None if row is None else self._remember(row)

    async def update(self, product: Product) -> None:
        text = (product.sku, product.name, product.description)
        try:
            if self._read.get(product.id) == text:
                changed = await self._session.execute(
                    PRODUCT_UPDATE_FIELDS,
                    product.price.amount,
                    product.price.currency,
                    product.stock,
                    product.active,
                    product.updated_at,
                    product.id,
                    product.version,
                )
            else:
                changed = await self._session.execute(
                    PRODUCT_UPDATE,
                    product.sku,
                    product.name,
                    product.description,
                    product.price.amount,
                    product.price.currency,
                    product.stock,
                    product.active,
                    product.updated_at,
                    words(*text),
                    product.id,
                    product.version,
                    guarded=True,  # the sku may be taken
                )
        except asyncpg.UniqueViolationError as exc:
            if _constraint(exc) == "products_sku_key":
                raise SkuTaken(product.sku) from None
            raise
        moved(changed, product, "The product")
        self._read[product.id] = text

    async def delete(self, product_id: str) -> bool:
        return (await self._session.execute(PRODUCT_DELETE, product_id)) > 0

    async def list(self, page: PageRequest, filter: ProductFilter, sort: ProductSort = ProductSort.ID) -> Page[Product]:
        return await self._list(page, filter, sort, _PRODUCT_COLUMNS, self._remember)

    async def list_versions(
        self, page: PageRequest, filter: ProductFilter, sort: ProductSort = ProductSort.ID
    ) -> Page[ProductVersion]:
        return await self._list(page, filter, sort, "id, version", _product_version)

    async def get_many(self, product_ids: Sequence[str]) -> builtins.list[Product]:
        if not product_ids:
            return []
        rows = await self._session.fetch(self._lock(PRODUCT_GET_MANY), list(product_ids))
        return [self._remember(row) for row in rows]

    async def get_many_by_sku(self, skus: Sequence[str]) -> builtins.list[Product]:
        if not skus:
            return []
        rows = await self._session.fetch(PRODUCT_GET_MANY_BY_SKU, list(skus))  # a lookup: no lock (the port)
        return [self._remember(row) for row in rows]

    async def low_stock(self, threshold: int, limit: int) -> builtins.list[Product]:
        return [_product(row) for row in await self._session.fetch(PRODUCT_LOW_STOCK, threshold, limit)]

    async def _list(
        self, page: PageRequest, filter: ProductFilter, sort: ProductSort, columns: str, build: Callable[[Record], T]
    ) -> Page[T]:
        key, _, types = _SORTS[sort]
        bound_to = cursors.binding(
            "products", sort.value, filter.active, filter.price_min, filter.price_max, filter.text
        )
        values: dict[str, Any] = {
            "active": filter.active,
            "price_min": filter.price_min,
            "price_max": filter.price_max,
            "limit": page.limit + 1,
        }
        if page.after is not None:
            decoded = cursors.decode(page.after, bound_to, types)
            values["after"] = decoded[-1]
            if key is not None:
                values["sort_key"] = decoded[0]
                if key == "p.created_at":
                    values["sort_key"] = _cursor_time(decoded[0])
        if filter.text is not None:
            match = tsquery(filter.text)
            if match is None:
                return Page(items=[], next_after=None)
            values["match"] = match
        sql, names = _product_list_sql(
            columns,
            sort,
            page.after is None,
            filter.active is not None,
            filter.price_min is not None,
            filter.price_max is not None,
            filter.text is not None,
        )
        rows = await self._session.fetch(sql, *(values[name] for name in names))
        if key is None:
            return _page(rows, page, build, lambda row: [row[0]], bound_to)
        return _page(rows, page, build, lambda row: [_sort_key(row[-1]), row[0]], bound_to)


# Refresh tokens.
_REFRESH_COLUMNS = "id, user_id, family_id, token_digest, created_at, expires_at, used_at, revoked_at, client_id, scope"
REFRESH_INSERT = f"INSERT INTO refresh_tokens ({_REFRESH_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
REFRESH_GET_BY_DIGEST = f"SELECT {_REFRESH_COLUMNS} FROM refresh_tokens WHERE token_digest = $1"
REFRESH_MARK_USED = "UPDATE refresh_tokens SET used_at = $1 WHERE id = $2 AND used_at IS NULL AND revoked_at IS NULL"
REFRESH_REVOKE_FAMILY = "UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL"
REFRESH_REVOKE_USER = "UPDATE refresh_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL"
REFRESH_FAMILIES_SINCE = (
    "SELECT DISTINCT family_id FROM refresh_tokens WHERE user_id = $1 AND created_at >= $2 ORDER BY family_id"
)
# A client's sessions (migration 12's partial indexes): of one user, or of all of them.
REFRESH_CLIENT_FAMILIES_SINCE = (
    "SELECT DISTINCT family_id FROM refresh_tokens WHERE client_id = $1 AND created_at >= $2 ORDER BY family_id"
)
REFRESH_CLIENT_USER_FAMILIES_SINCE = (
    "SELECT DISTINCT family_id FROM refresh_tokens"
    " WHERE client_id = $1 AND user_id = $2 AND created_at >= $3 ORDER BY family_id"
)
REFRESH_REVOKE_CLIENT = "UPDATE refresh_tokens SET revoked_at = $1 WHERE client_id = $2 AND revoked_at IS NULL"
REFRESH_REVOKE_CLIENT_USER = (
    "UPDATE refresh_tokens SET revoked_at = $1 WHERE client_id = $2 AND user_id = $3 AND revoked_at IS NULL"
)


def _token(row: Record) -> RefreshToken:
    return RefreshToken(
        id=row[0],
        user_id=row[1],
        family_id=row[2],
        token_digest=row[3],
        created_at=row[4],
        expires_at=row[5],
        used_at=row[6],
        revoked_at=row[7],
        client_id=row[8],
        scope=row[9],
    )


class PostgresRefreshTokenRepository(_Repository):
    async def add(self, token: RefreshToken) -> None:
        await self._session.execute(
            REFRESH_INSERT,
            token.id,
            token.user_id,
            token.family_id,
            token.token_digest,
            token.created_at,
            token.expires_at,
            token.used_at,
            token.revoked_at,
            token.client_id,
            token.scope,
        )

    async def get_by_digest(self, digest: str) -> RefreshToken | None:
        row = await self._session.fetchrow(REFRESH_GET_BY_DIGEST, digest)
        return None if row is None else _token(row)

    async def mark_used(self, token_id: str, at: datetime) -> bool:
        # The conditional update is the guard: of two units using one token at once, the
        # second waits for the first's row lock, then finds it used.
        return (await self._session.execute(REFRESH_MARK_USED, at, token_id)) == 1

    async def revoke_family(self, family_id: str, at: datetime) -> int:
        return await self._session.execute(REFRESH_REVOKE_FAMILY, at, family_id)

    async def revoke_all_for_user(self, user_id: str, at: datetime) -> int:
        return await self._session.execute(REFRESH_REVOKE_USER, at, user_id)

    async def families_since(self, user_id: str, since: datetime) -> builtins.list[str]:
        return [row[0] for row in await self._session.fetch(REFRESH_FAMILIES_SINCE, user_id, since)]

    async def client_families_since(self, client_id: str, user_id: str | None, since: datetime) -> builtins.list[str]:
        if user_id is None:
            rows = await self._session.fetch(REFRESH_CLIENT_FAMILIES_SINCE, client_id, since)
        else:
            rows = await self._session.fetch(REFRESH_CLIENT_USER_FAMILIES_SINCE, client_id, user_id, since)
        return [row[0] for row in rows]

    async def revoke_client(self, client_id: str, user_id: str | None, at: datetime) -> int:
        if user_id is None:
            return await self._session.execute(REFRESH_REVOKE_CLIENT, at, client_id)
        return await self._session.execute(REFRESH_REVOKE_CLIENT_USER, at, client_id, user_id)


# Authorization codes. Marking one used is one conditional UPDATE: of two exchanges of one
# code at once, the second waits for the first's row lock, then (READ COMMITTED re-reads the
# row) finds it used and changes nothing.
_CODE_COLUMNS = (
    "id, code_digest, client_id, user_id, redirect_uri, scope, code_challenge, created_at, expires_at,"
    " used_at, family_id"
)
CODE_INSERT = f"INSERT INTO authorization_codes ({_CODE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
CODE_GET_BY_DIGEST = f"SELECT {_CODE_COLUMNS} FROM authorization_codes WHERE code_digest = $1"
CODE_MARK_USED = "UPDATE authorization_codes SET used_at = $1, family_id = $2 WHERE id = $3 AND used_at IS NULL"
CODE_PURGE = (
    "DELETE FROM authorization_codes"
    " WHERE id IN (SELECT id FROM authorization_codes WHERE expires_at < $1 ORDER BY expires_at LIMIT $2)"
)


def _authorization_code(row: Record) -> AuthorizationCode:
    return AuthorizationCode(
        id=row[0],
        code_digest=row[1],
        client_id=row[2],
        user_id=row[3],
        redirect_uri=row[4],
        scope=row[5],
        code_challenge=row[6],
        created_at=row[7],
        expires_at=row[8],
        used_at=row[9],
        family_id=row[10],
    )


class PostgresAuthorizationCodeRepository(_Repository):
    async def add(self, code: AuthorizationCode) -> None:
        await self._session.execute(
            CODE_INSERT,
            code.id,
            code.code_digest,
            code.client_id,
            code.user_id,
            code.redirect_uri,
            code.scope,
            code.code_challenge,
            code.created_at,
            code.expires_at,
            code.used_at,
            code.family_id,
        )

    async def get_by_digest(self, digest: str) -> AuthorizationCode | None:
        row = await self._session.fetchrow(CODE_GET_BY_DIGEST, digest)
        return None if row is None else _authorization_code(row)

    async def mark_used(self, code_id: str, at: datetime, family_id: str) -> bool:
        return (await self._session.execute(CODE_MARK_USED, at, family_id, code_id)) == 1

    async def purge(self, before: datetime, limit: int) -> int:
        return int(await self._session.execute(CODE_PURGE, before, limit))


# Consents: one row a user and client; a user's list is their primary key's range, in the
# byte order of client ids (COLLATE "C"), as SQLite's.
_CONSENT_COLUMNS = "user_id, client_id, scope, granted_at, updated_at"
CONSENT_PUT = (
    f"INSERT INTO oauth_consents ({_CONSENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"
    " ON CONFLICT (user_id, client_id) DO UPDATE"
    " SET scope = excluded.scope, granted_at = excluded.granted_at, updated_at = excluded.updated_at"
)
CONSENT_GET = f"SELECT {_CONSENT_COLUMNS} FROM oauth_consents WHERE user_id = $1 AND client_id = $2"
CONSENT_DELETE = "DELETE FROM oauth_consents WHERE user_id = $1 AND client_id = $2"
CONSENT_LIST_FOR_USER = f"SELECT {_CONSENT_COLUMNS} FROM oauth_consents WHERE user_id = $1 ORDER BY client_id"


def _consent(row: Record) -> Consent:
    return Consent(user_id=row[0], client_id=row[1], scope=row[2], granted_at=row[3], updated_at=row[4])


class PostgresConsentRepository(_Repository):
    async def get(self, user_id: str, client_id: str) -> Consent | None:
        row = await self._session.fetchrow(CONSENT_GET, user_id, client_id)
        return None if row is None else _consent(row)

    async def put(self, consent: Consent) -> None:
        await self._session.execute(
            CONSENT_PUT,
            consent.user_id,
            consent.client_id,
            consent.scope,
            consent.granted_at,
            consent.updated_at,
        )

    async def delete(self, user_id: str, client_id: str) -> bool:
        return (await self._session.execute(CONSENT_DELETE, user_id, client_id)) == 1

    async def list_for_user(self, user_id: str) -> builtins.list[Consent]:
        return [_consent(row) for row in await self._session.fetch(CONSENT_LIST_FOR_USER, user_id)]


# Personal API keys. Scopes are stored space-separated, in the order of SCOPES.
_API_KEY_COLUMNS = "id, user_id, name, scopes, secret_digest, created_at, expires_at, last_used_at, revoked_at"
API_KEY_INSERT = f"INSERT INTO api_keys ({_API_KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
API_KEY_GET = f"SELECT {_API_KEY_COLUMNS} FROM api_keys WHERE id = $1"
API_KEY_GET_BY_DIGEST = f"SELECT {_API_KEY_COLUMNS} FROM api_keys WHERE secret_digest = $1"
API_KEY_UPDATE = "UPDATE api_keys SET last_used_at = $1, revoked_at = $2 WHERE id = $3"
API_KEY_RECORD_USE = (
    "UPDATE api_keys SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at <= $3)"
)


def _api_key(row: Record) -> ApiKey:
    return ApiKey(
        id=row[0],
        user_id=row[1],
        name=row[2],
        scopes=frozenset(row[3].split()),
        secret_digest=row[4],
        created_at=row[5],
        expires_at=row[6],
        last_used_at=row[7],
        revoked_at=row[8],
    )


class PostgresApiKeyRepository(_Repository):
    async def add(self, key: ApiKey) -> None:
        await self._session.execute(
            API_KEY_INSERT,
            key.id,
            key.user_id,
            key.name,
            format_scopes(key.scopes),
            key.secret_digest,
            key.created_at,
            key.expires_at,
            key.last_used_at,
            key.revoked_at,
        )

    async def get(self, key_id: str) -> ApiKey | None:
        row = await self._session.fetchrow(self._lock(API_KEY_GET), key_id)
        return None if row is None else _api_key(row)

    async def get_by_digest(self, digest: str) -> ApiKey | None:
        row = await self._session.fetchrow(API_KEY_GET_BY_DIGEST, digest)
        return None if row is None else _api_key(row)

    async def list(self, page: PageRequest, filter: ApiKeyFilter) -> Page[ApiKey]:
        return await _filtered_list(
            self._session,
            _API_KEY_COLUMNS,
            "api_keys",
            "api_keys",
            {"user_id": filter.user_id},
            page,
            _api_key,
            descending=True,
        )

    async def update(self, key: ApiKey) -> None:
        await self._session.execute(API_KEY_UPDATE, key.last_used_at, key.revoked_at, key.id)

    async def record_use(self, key_id: str, at: datetime, *, unless_since: datetime) -> bool:
        return (await self._session.execute(API_KEY_RECORD_USE, at, key_id, unless_since)) == 1


# Ended sessions. Sequence numbers are handed out when rows are inserted, not when they are
# committed, so "seq above the last one seen" could skip a row committed late. Each row
# carries the id of the transaction that wrote it instead, and a cursor carries the snapshot
# its read saw (pg_current_snapshot: in a REPEATABLE READ unit, the unit's own): what is new
# since is exactly the rows that snapshot did not see (pg_visible_in_snapshot), all of them
# of transactions at or above its horizon (xmin), where the txn index starts the scan.
REVOKED_SESSION_INSERT = (
    "INSERT INTO revoked_sessions (session_id, revoked_at, until) VALUES ($1, $2, $3)"
    " ON CONFLICT (session_id) DO NOTHING"
)
REVOKED_SESSION_SNAPSHOT = "SELECT pg_current_snapshot()::text"
REVOKED_SESSION_LIVE = (
    "SELECT seq, session_id, until FROM revoked_sessions"
    " WHERE until > $1 AND (until, seq) > ($2, $3) ORDER BY until, seq LIMIT $4"
)
REVOKED_SESSION_SINCE = (
    "SELECT seq, session_id, until, txn::text FROM revoked_sessions"
    " WHERE txn >= pg_snapshot_xmin($1::text::pg_snapshot) AND NOT pg_visible_in_snapshot(txn, $1::text::pg_snapshot)"
    " AND (txn, seq) > ($2::text::xid8, $3) ORDER BY txn, seq LIMIT $4"
)
REVOKED_SESSION_PURGE = (
    "DELETE FROM revoked_sessions"
    " WHERE seq IN (SELECT seq FROM revoked_sessions WHERE until < $1 ORDER BY until LIMIT $2)"
)
_EPOCH = format_timestamp(datetime.fromisoformat("0001-01-01T00:00:00Z"))


class PostgresRevokedSessions(_Repository):
    async def add(self, session_ids: Sequence[str], at: datetime, until: datetime) -> None:
        await self._session.executemany(REVOKED_SESSION_INSERT, [(session_id, at, until) for session_id in session_ids])

    async def changes(self, cursor: str | None, now: datetime, limit: int) -> SessionChanges:
        # Cursors: "load <snapshot> <until> <seq>" while loading the live records (what the
        # snapshot saw); then "since <snapshot> <next> <txn> <seq>": the records <snapshot>
        # did not see, from (<txn>, <seq>) on; <next> is the snapshot of the pass's first
        # call ("-" before it), from which the next pass goes on.
        if cursor is None:
            snapshot = await self._session.fetchval(REVOKED_SESSION_SNAPSHOT)
            cursor = f"load {snapshot} {_EPOCH} 0"
        parts = cursor.split(" ")
        try:
            if parts[0] == "load" and len(parts) == 4:
                return await self._load(parts[1], parse_timestamp(parts[2]), int(parts[3]), now, limit)
            if parts[0] == "since" and len(parts) == 5:
                return await self._since(parts[1], parts[2], parts[3], int(parts[4]), now, limit)
        except ValueError:
            pass
        raise ValueError(f"not a cursor of this store: {cursor!r}")

    async def _load(self, snapshot: str, until: datetime, seq: int, now: datetime, limit: int) -> SessionChanges:
        rows = await self._session.fetch(REVOKED_SESSION_LIVE, now, until, seq, limit)
        ended = [EndedSession(row[1], row[2]) for row in rows]
        if len(rows) < limit:
            return SessionChanges(ended, f"since {snapshot} - 0 0", complete=True)
        last = rows[-1]
        return SessionChanges(ended, f"load {snapshot} {format_timestamp(last[2])} {last[0]}", complete=False)

    async def _since(
        self, snapshot: str, following: str, txn: str, seq: int, now: datetime, limit: int
    ) -> SessionChanges:
        if following == "-":
            following = await self._session.fetchval(REVOKED_SESSION_SNAPSHOT)
        rows = await self._session.fetch(REVOKED_SESSION_SINCE, snapshot, txn, seq, limit)
        ended = [EndedSession(row[1], row[2]) for row in rows if row[2] > now]
        if len(rows) < limit:
            return SessionChanges(ended, f"since {following} - 0 0", complete=True)
        last = rows[-1]
        return SessionChanges(ended, f"since {snapshot} {following} {last[3]} {last[0]}", complete=False)

    async def purge(self, before: datetime, limit: int) -> int:
        return await self._session.execute(REVOKED_SESSION_PURGE, before, limit)


# The audit log.
_AUDIT_COLUMNS = "id, at, actor_id, action, object_type, object_id, source_ip, details::text"
AUDIT_INSERT = (
    "INSERT INTO audit_log (id, at, actor_id, action, object_type, object_id, source_ip, details)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)"
)


def _audit_entry(row: Record) -> AuditEntry:
    return AuditEntry(
        id=row[0],
        at=row[1],
        actor_id=row[2],
        action=row[3],
        object_type=row[4],
        object_id=row[5],
        source_ip=row[6],
        details=orjson.loads(row[7]),
    )


class PostgresAuditLog(_Repository):
    async def append(self, entry: AuditEntry) -> None:
        await self._session.execute(
            AUDIT_INSERT,
            entry.id,
            entry.at,
            entry.actor_id,
            entry.action,
            entry.object_type,
            entry.object_id,
            entry.source_ip,
            orjson.dumps(entry.details).decode(),
        )

    async def list(self, page: PageRequest, filter: AuditFilter) -> Page[AuditEntry]:
        filters = {
            "actor_id": filter.actor_id,
            "action": filter.action,
            "object_type": filter.object_type,
            "object_id": filter.object_id,
        }
        return await _filtered_list(
            self._session, _AUDIT_COLUMNS, "audit_log", "audit", filters, page, _audit_entry, descending=True
        )


# Orders. An order and its lines are read by one statement: the lines come as one JSON
# array from a correlated subquery.
_ORDER_COLUMNS = (
    "id, customer_id, status, subtotal, total, amount_paid, amount_refunded, currency,"
    " created_at, updated_at, expires_at, version"
)
_ORDER_FIELDS = (
    ", ".join(f"o.{c}" for c in _ORDER_COLUMNS.split(", "))
    + ", (SELECT coalesce(json_agg(json_build_array(l.line_no, l.product_id, l.sku, l.name, l.unit_price,"
    " l.quantity) ORDER BY l.line_no), '[]')::text FROM order_lines AS l WHERE l.order_id = o.id)"
)
# An order and its lines in one statement, one round trip: the lines come as column arrays.
ORDER_INSERT = (
    f"WITH o AS (INSERT INTO orders ({_ORDER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12))"
    " INSERT INTO order_lines (order_id, line_no, product_id, sku, name, unit_price, quantity)"
    " SELECT $1, * FROM unnest($13::integer[], $14::text[], $15::text[], $16::text[], $17::bigint[], $18::integer[])"
)
ORDER_INSERT_MANY = (
    f"INSERT INTO orders ({_ORDER_COLUMNS}) SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[],"
    " $5::bigint[], $6::bigint[], $7::bigint[], $8::text[], $9::timestamptz[], $10::timestamptz[],"
    " $11::timestamptz[], $12::bigint[])"
)
ORDER_LINE_INSERT_MANY = (
    "INSERT INTO order_lines (order_id, line_no, product_id, sku, name, unit_price, quantity)"
    " SELECT * FROM unnest($1::text[], $2::integer[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::integer[])"
)
ORDER_GET = f"SELECT {_ORDER_FIELDS} FROM orders AS o WHERE o.id = $1"
ORDER_GET_MANY = f"SELECT {_ORDER_FIELDS} FROM orders AS o WHERE o.id = ANY($1::text[]) ORDER BY o.id"
ORDER_UPDATE = (
    "UPDATE orders SET status = $1, amount_paid = $2, amount_refunded = $3, updated_at = $4, expires_at = $5,"
    " version = version + 1 WHERE id = $6 AND version = $7"
)
# Payments and refunds belong to an order. A write unit locks the order before it reads
# (and locks) any payment or refund of it, whichever it reaches first: a unit that reads
# an order and then its payments (paying, refunding, cancelling) and one that reads a
# payment or a refund and then its order (settling a card payment, a refund, a webhook)
# then take their locks in one order, and queue instead of deadlocking.
ORDER_LOCK = "SELECT 1 FROM orders WHERE id = $1 FOR UPDATE"
ORDER_LOCK_OF_PAYMENT = "SELECT 1 FROM orders WHERE id = (SELECT order_id FROM payments WHERE id = $1) FOR UPDATE"
ORDER_LOCK_OF_PAYMENT_REFERENCE = (
    "SELECT 1 FROM orders WHERE id = (SELECT order_id FROM payments WHERE provider_reference = $1) FOR UPDATE"
)
ORDER_LOCK_OF_REFUND = "SELECT 1 FROM orders WHERE id = (SELECT order_id FROM refunds WHERE id = $1) FOR UPDATE"
ORDER_DUE_FOR_EXPIRY = (
    "SELECT id FROM orders WHERE status = 'pending_payment' AND expires_at <= $1 ORDER BY expires_at LIMIT $2"
)
# The dashboard's figures: orders_created_at (migration 10) covers the summary, orders_status_id the count.
ORDER_SUMMARY_SINCE = (
    "SELECT count(*), coalesce(sum(total), 0) FROM orders"
    " WHERE created_at >= $1 AND currency = $2 AND status NOT IN ('cancelled', 'expired')"
)
ORDER_COUNT_WITH_STATUS = "SELECT count(*) FROM orders WHERE status = $1"


def _order(row: Record) -> Order:
    currency = row[7]
    lines = orjson.loads(row[12])
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
        created_at=row[8],
        updated_at=row[9],
        expires_at=row[10],
        version=row[11],
    )


def _order_row(order: Order) -> tuple[Any, ...]:
    return (
        order.id,
        order.customer_id,
        order.status.value,
        order.subtotal.amount,
        order.total.amount,
        order.amount_paid,
        order.amount_refunded,
        order.currency,
        order.created_at,
        order.updated_at,
        order.expires_at,
        order.version,
    )


def _line_rows(order: Order) -> builtins.list[tuple[Any, ...]]:
    return [
        (order.id, n, line.product_id, line.sku, line.name, line.unit_price.amount, line.quantity)
        for n, line in enumerate(order.lines)
    ]


class PostgresOrderRepository(_Repository):
    async def add(self, order: Order) -> None:
        lines = [row[1:] for row in _line_rows(order)]  # without the order's id: $1 already
        await self._session.execute(ORDER_INSERT, *_order_row(order), *_columns(lines, 6))

    async def add_many(self, orders: Sequence[Order]) -> None:
        if not orders:
            return
        await self._session.execute(ORDER_INSERT_MANY, *_columns([_order_row(order) for order in orders], 12))
        lines = [row for order in orders for row in _line_rows(order)]
        await self._session.execute(ORDER_LINE_INSERT_MANY, *_columns(lines, 7))

    async def get(self, order_id: str) -> Order | None:
        row = await self._session.fetchrow(self._lock(ORDER_GET, "o"), order_id)
        if row is None:
            return None
        if self._session.locking:
            self._session.locked_orders.add(row[0])
        return _order(row)

    async def get_many(self, order_ids: Sequence[str]) -> builtins.list[Order]:
        if not order_ids:
            return []
        orders = [_order(row) for row in await self._session.fetch(self._lock(ORDER_GET_MANY, "o"), list(order_ids))]
        if self._session.locking:
            self._session.locked_orders.update(order.id for order in orders)
        return orders

    async def update(self, order: Order) -> None:
        changed = await self._session.execute(
            ORDER_UPDATE,
            order.status.value,
            order.amount_paid,
            order.amount_refunded,
            order.updated_at,
            order.expires_at,
            order.id,
            order.version,
        )
        moved(changed, order, "The order")

    async def list(self, page: PageRequest, filter: OrderFilter) -> Page[Order]:
        filters = {
            "customer_id": filter.customer_id,
            "status": None if filter.status is None else filter.status.value,
        }
        return await _filtered_list(
            self._session, _ORDER_FIELDS, "orders AS o", "orders", filters, page, _order, descending=True
        )

    async def due_for_expiry(self, now: datetime, limit: int) -> builtins.list[str]:
        return [row[0] for row in await self._session.fetch(ORDER_DUE_FOR_EXPIRY, now, limit)]

    async def summary_since(self, since: datetime, currency: str) -> OrderSummary:
        row = await self._session.fetchrow(ORDER_SUMMARY_SINCE, since, currency)
        assert row is not None  # an aggregate always has its one row
        return OrderSummary(orders=int(row[0]), total=int(row[1]))

    async def count_with_status(self, status: OrderStatus) -> int:
        return int(await self._session.fetchval(ORDER_COUNT_WITH_STATUS, status.value))


# Payments.
_PAYMENT_COLUMNS = (
    "id, order_id, method, provider, status, amount, currency, provider_reference, client_secret, next_action,"
    " failure_code, reference, payment_method, created_at, updated_at, version"
)
_PAYMENT_SELECT = _PAYMENT_COLUMNS.replace("next_action,", "next_action::text,")
PAYMENT_INSERT = (
    f"INSERT INTO payments ({_PAYMENT_COLUMNS})"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11, $12, $13, $14, $15, $16) ON CONFLICT DO NOTHING"
)
PAYMENT_INSERT_MANY = (
    f"INSERT INTO payments ({_PAYMENT_COLUMNS}) SELECT id, order_id, method, provider, status, amount, currency,"
    " provider_reference, client_secret, next_action::jsonb, failure_code, reference, payment_method, created_at,"
    " updated_at, version FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[],"
    " $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::timestamptz[],"
    f" $15::timestamptz[], $16::bigint[]) AS p ({_PAYMENT_COLUMNS}) ON CONFLICT DO NOTHING RETURNING id"
)
PAYMENT_GET = f"SELECT {_PAYMENT_SELECT} FROM payments WHERE id = $1"
PAYMENT_GET_BY_PROVIDER_REFERENCE = f"SELECT {_PAYMENT_SELECT} FROM payments WHERE provider_reference = $1"
PAYMENT_LIST_FOR_ORDER = f"SELECT {_PAYMENT_SELECT} FROM payments WHERE order_id = $1 ORDER BY id"
PAYMENT_UPDATE = (
    "UPDATE payments SET status = $1, provider_reference = $2, client_secret = $3, next_action = $4::jsonb,"
    " failure_code = $5, updated_at = $6, version = version + 1 WHERE id = $7 AND version = $8"
)


def _optional_json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _payment(row: Record) -> Payment:
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
        created_at=row[13],
        updated_at=row[14],
        version=row[15],
    )


class PostgresPaymentRepository(_Repository):
    def __init__(self, session: PgSession):
        super().__init__(session)
        self._references: dict[str, str | None] = {}  # as this unit read them, by id

    def _remember(self, row: Record) -> Payment:
        self._references[row[0]] = row[7]
        return _payment(row)

    async def add(self, payment: Payment) -> None:
        added = await self._session.execute(
            PAYMENT_INSERT,
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
            payment.created_at,
            payment.updated_at,
            payment.version,
        )
        if added != 1:  # ids are unique by making: the provider reference is taken
            raise ProviderReferenceTaken(payment.provider_reference or "")

    async def add_many(self, payments: Sequence[Payment]) -> None:
        if not payments:
            return
        rows = [
            (
                p.id,
                p.order_id,
                p.method.value,
                p.provider,
                p.status.value,
                p.amount.amount,
                p.amount.currency,
                p.provider_reference,
                p.client_secret,
                _optional_json(p.next_action),
                p.failure_code,
                p.reference,
                p.payment_method,
                p.created_at,
                p.updated_at,
                p.version,
            )
            for p in payments
        ]
        inserted = {row[0] for row in await self._session.fetch(PAYMENT_INSERT_MANY, *_columns(rows, 16))}
        for payment in payments:  # ids are unique by making: a provider reference is taken
            if payment.id not in inserted:
                raise ProviderReferenceTaken(payment.provider_reference or "")

    async def get(self, payment_id: str) -> Payment | None:
        await self._lock_order_first(ORDER_LOCK_OF_PAYMENT, payment_id)
        row = await self._session.fetchrow(self._lock(PAYMENT_GET), payment_id)
        return None if row is None else self._remember(row)

    async def get_by_provider_reference(self, reference: str) -> Payment | None:
        await self._lock_order_first(ORDER_LOCK_OF_PAYMENT_REFERENCE, reference)
        row = await self._session.fetchrow(self._lock(PAYMENT_GET_BY_PROVIDER_REFERENCE), reference)
        return None if row is None else self._remember(row)

    async def list_for_order(self, order_id: str) -> builtins.list[Payment]:
        await self._lock_order(order_id)
        return [self._remember(row) for row in await self._session.fetch(self._lock(PAYMENT_LIST_FOR_ORDER), order_id)]

    async def update(self, payment: Payment) -> None:
        try:
            changed = await self._session.execute(
                PAYMENT_UPDATE,
                payment.status.value,
                payment.provider_reference,
                payment.client_secret,
                _optional_json(payment.next_action),
                payment.failure_code,
                payment.updated_at,
                payment.id,
                payment.version,
                # The reference may be another payment's: only a new one can be.
                guarded=payment.provider_reference is not None
                and self._references.get(payment.id, "") != payment.provider_reference,
            )
        except asyncpg.UniqueViolationError as exc:
            if _constraint(exc) == "payments_provider_reference":
                raise ProviderReferenceTaken(payment.provider_reference or "") from None
            raise
        moved(changed, payment, "The payment")
        self._references[payment.id] = payment.provider_reference


# Refunds.
_REFUND_COLUMNS = (
    "id, payment_id, order_id, amount, currency, reason, status, provider_reference, failure_code,"
    " created_at, updated_at, version"
)
REFUND_INSERT = f"INSERT INTO refunds ({_REFUND_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
REFUND_INSERT_MANY = (
    f"INSERT INTO refunds ({_REFUND_COLUMNS}) SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[],"
    " $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::timestamptz[], $11::timestamptz[],"
    " $12::bigint[])"
)
REFUND_GET = f"SELECT {_REFUND_COLUMNS} FROM refunds WHERE id = $1"
REFUND_LIST_FOR_ORDER = f"SELECT {_REFUND_COLUMNS} FROM refunds WHERE order_id = $1 ORDER BY id"
REFUND_LIST_FOR_PAYMENT = f"SELECT {_REFUND_COLUMNS} FROM refunds WHERE payment_id = $1 ORDER BY id"
REFUND_COUNT_PENDING = "SELECT count(*) FROM refunds WHERE status = 'pending'"  # refunds_status_id
REFUND_LIST_UNSENT = (
    f"SELECT {_REFUND_COLUMNS} FROM refunds"
    " WHERE status = 'pending' AND provider_reference IS NULL AND created_at > $1 AND created_at < $2"
    " ORDER BY created_at LIMIT $3"
)
REFUND_UPDATE = (
    "UPDATE refunds SET status = $1, provider_reference = $2, failure_code = $3, updated_at = $4,"
    " version = version + 1 WHERE id = $5 AND version = $6"
)


def _refund(row: Record) -> Refund:
    return Refund(
        id=row[0],
        payment_id=row[1],
        order_id=row[2],
        amount=Money(row[3], row[4]),
        reason=row[5],
        status=RefundStatus(row[6]),
        provider_reference=row[7],
        failure_code=row[8],
        created_at=row[9],
        updated_at=row[10],
        version=row[11],
    )


def _refund_row(refund: Refund) -> tuple[Any, ...]:
    return (
        refund.id,
        refund.payment_id,
        refund.order_id,
        refund.amount.amount,
        refund.amount.currency,
        refund.reason,
        refund.status.value,
        refund.provider_reference,
        refund.failure_code,
        refund.created_at,
        refund.updated_at,
        refund.version,
    )


class PostgresRefundRepository(_Repository):
    async def add(self, refund: Refund) -> None:
        await self._session.execute(REFUND_INSERT, *_refund_row(refund))

    async def add_many(self, refunds: Sequence[Refund]) -> None:
        if refunds:
            await self._session.execute(REFUND_INSERT_MANY, *_columns([_refund_row(r) for r in refunds], 12))

    async def get(self, refund_id: str) -> Refund | None:
        await self._lock_order_first(ORDER_LOCK_OF_REFUND, refund_id)
        row = await self._session.fetchrow(self._lock(REFUND_GET), refund_id)
        return None if row is None else _refund(row)

    async def list_for_order(self, order_id: str) -> builtins.list[Refund]:
        await self._lock_order(order_id)
        return [_refund(row) for row in await self._session.fetch(self._lock(REFUND_LIST_FOR_ORDER), order_id)]

    async def list_for_payment(self, payment_id: str) -> builtins.list[Refund]:
        await self._lock_order_first(ORDER_LOCK_OF_PAYMENT, payment_id)
        return [_refund(row) for row in await self._session.fetch(self._lock(REFUND_LIST_FOR_PAYMENT), payment_id)]

    async def list_unsent(self, created_after: datetime, created_before: datetime, limit: int) -> builtins.list[Refund]:
        return [
            _refund(row) for row in await self._session.fetch(REFUND_LIST_UNSENT, created_after, created_before, limit)
        ]

    async def count_pending(self) -> int:
        return int(await self._session.fetchval(REFUND_COUNT_PENDING))

    async def update(self, refund: Refund) -> None:
        changed = await self._session.execute(
            REFUND_UPDATE,
            refund.status.value,
            refund.provider_reference,
            refund.failure_code,
            refund.updated_at,
            refund.id,
            refund.version,
        )
        moved(changed, refund, "The refund")


# The outbox.
_OUTBOX_COLUMNS = "id, type, aggregate_type, aggregate_id, payload::text, occurred_at"
OUTBOX_INSERT = (
    "INSERT INTO outbox (id, type, aggregate_type, aggregate_id, payload, occurred_at)"
    " VALUES ($1, $2, $3, $4, $5::jsonb, $6)"
)
OUTBOX_LIST_PENDING = f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE delivered_at IS NULL ORDER BY id LIMIT $1"
OUTBOX_MARK_DELIVERED = "UPDATE outbox SET delivered_at = $1 WHERE id = $2 AND delivered_at IS NULL"
OUTBOX_PURGE_DELIVERED = (
    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE delivered_at < $1 ORDER BY delivered_at LIMIT $2)"
)
OUTBOX_PURGE_UNDELIVERED = (
    "DELETE FROM outbox WHERE id IN"
    " (SELECT id FROM outbox WHERE delivered_at IS NULL AND occurred_at < $1 ORDER BY occurred_at LIMIT $2)"
)


def _event(row: Record) -> DomainEvent:
    return DomainEvent(
        id=row[0],
        type=row[1],
        aggregate_type=row[2],
        aggregate_id=row[3],
        payload=orjson.loads(row[4]),
        occurred_at=row[5],
    )


class PostgresOutbox(_Repository):
    async def append(self, event: DomainEvent) -> None:
        await self._session.execute(
            OUTBOX_INSERT,
            event.id,
            event.type,
            event.aggregate_type,
            event.aggregate_id,
            orjson.dumps(event.payload).decode(),
            event.occurred_at,
        )

    async def list_pending(self, limit: int) -> builtins.list[DomainEvent]:
        return [_event(row) for row in await self._session.fetch(OUTBOX_LIST_PENDING, limit)]

    async def mark_delivered(self, event_id: str, at: datetime) -> bool:
        return (await self._session.execute(OUTBOX_MARK_DELIVERED, at, event_id)) == 1

    async def purge(self, before: datetime, limit: int) -> int:
        purged = await self._session.execute(OUTBOX_PURGE_DELIVERED, before, limit)
        if purged < limit:
            purged += await self._session.execute(OUTBOX_PURGE_UNDELIVERED, before, limit - purged)
        return purged


PROVIDER_EVENT_INSERT = (
    "INSERT INTO provider_events (provider, event_id, received_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
)


class PostgresProviderEvents(_Repository):
    async def record(self, provider: str, event_id: str, at: datetime) -> bool:
        # Of two transactions recording one event at once, the second waits on the first's
        # key, then inserts nothing (or, if the first rolled back, records it itself).
        return (await self._session.execute(PROVIDER_EVENT_INSERT, provider, event_id, at)) == 1


# Idempotency keys (see core/ports/idempotency.py).
_IDEMPOTENCY_COLUMNS = "scope, key, fingerprint, created_at, status, headers::text, body"
IDEMPOTENCY_GET = f"SELECT {_IDEMPOTENCY_COLUMNS} FROM idempotency_keys WHERE scope = $1 AND key = $2"
IDEMPOTENCY_CLAIM = (
    "INSERT INTO idempotency_keys (scope, key, fingerprint, created_at) VALUES ($1, $2, $3, $4)"
    " ON CONFLICT (scope, key) DO UPDATE SET fingerprint = excluded.fingerprint, created_at = excluded.created_at,"
    " status = NULL, headers = NULL, body = NULL WHERE idempotency_keys.created_at < $5"
)
IDEMPOTENCY_COMPLETE = (
    "UPDATE idempotency_keys SET status = $1, headers = $2::jsonb, body = $3 WHERE scope = $4 AND key = $5"
)
IDEMPOTENCY_PURGE = (
    "DELETE FROM idempotency_keys WHERE (scope, key) IN"
    " (SELECT scope, key FROM idempotency_keys WHERE created_at < $1 ORDER BY created_at LIMIT $2)"
)
IDEMPOTENCY_RELEASE = "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2"


class PostgresIdempotencyRepository(_Repository):
    async def get(self, scope: str, key: str) -> StoredRequest | None:
        row = await self._session.fetchrow(IDEMPOTENCY_GET, scope, key)
        if row is None:
            return None
        return StoredRequest(
            scope=row[0],
            key=row[1],
            fingerprint=row[2],
            created_at=row[3],
            status=row[4],
            headers=orjson.loads(row[5]) if row[5] else {},
            body=row[6] or b"",
        )

    async def claim(self, claim: IdempotencyClaim, at: datetime, expired_before: datetime) -> bool:
        # Of two transactions claiming one key at once, the second waits on the first's key;
        # if the first commits, the second's conflict clause finds a live claim and writes nothing.
        changed = await self._session.execute(
            IDEMPOTENCY_CLAIM, claim.scope, claim.key, claim.fingerprint, at, expired_before
        )
        return changed == 1

    async def complete(self, scope: str, key: str, status: int, headers: dict[str, str], body: bytes) -> None:
        await self._session.execute(IDEMPOTENCY_COMPLETE, status, orjson.dumps(headers).decode(), body, scope, key)

    async def release(self, scope: str, key: str) -> None:
        await self._session.execute(IDEMPOTENCY_RELEASE, scope, key)

    async def purge(self, before: datetime, limit: int) -> int:
        return await self._session.execute(IDEMPOTENCY_PURGE, before, limit)


# OAuth clients. Their lists are arrays of text, in the domain's order.
_OAUTH_CLIENT_COLUMNS = (
    "id, name, type, redirect_uris, grant_types, scopes, status, secret_digest, secret_rotated_at,"
    " created_at, updated_at, created_by"
)
OAUTH_CLIENT_INSERT = (
    f"INSERT INTO oauth_clients ({_OAUTH_CLIENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
)
OAUTH_CLIENT_GET = f"SELECT {_OAUTH_CLIENT_COLUMNS} FROM oauth_clients WHERE id = $1"
OAUTH_CLIENT_UPDATE = (
    "UPDATE oauth_clients SET name = $1, redirect_uris = $2, grant_types = $3, scopes = $4, status = $5,"
    " secret_digest = $6, secret_rotated_at = $7, updated_at = $8 WHERE id = $9"
)


def _oauth_client(row: Record) -> OAuthClient:
    return OAuthClient(
        id=row[0],
        name=row[1],
        type=ClientType(row[2]),
        redirect_uris=tuple(row[3]),
        grant_types=tuple(GrantType(g) for g in row[4]),
        scopes=tuple(row[5]),
        status=ClientStatus(row[6]),
        secret_digest=row[7],
        secret_rotated_at=row[8],
        created_at=row[9],
        updated_at=row[10],
        created_by=row[11],
    )


class PostgresOAuthClientRepository(_Repository):
    async def add(self, client: OAuthClient) -> None:
        await self._session.execute(
            OAUTH_CLIENT_INSERT,
            client.id,
            client.name,
            client.type.value,
            list(client.redirect_uris),
            [g.value for g in client.grant_types],
            list(client.scopes),
            client.status.value,
            client.secret_digest,
            client.secret_rotated_at,
            client.created_at,
            client.updated_at,
            client.created_by,
        )

    async def get(self, client_id: str) -> OAuthClient | None:
        row = await self._session.fetchrow(self._lock(OAUTH_CLIENT_GET), client_id)
        return None if row is None else _oauth_client(row)

    async def update(self, client: OAuthClient) -> None:
        await self._session.execute(
            OAUTH_CLIENT_UPDATE,
            client.name,
            list(client.redirect_uris),
            [g.value for g in client.grant_types],
            list(client.scopes),
            client.status.value,
            client.secret_digest,
            client.secret_rotated_at,
            client.updated_at,
            client.id,
        )

    async def list(self, page: PageRequest, filter: OAuthClientFilter) -> Page[OAuthClient]:
        filters = {"status": None if filter.status is None else filter.status.value}
        return await _filtered_list(
            self._session,
            _OAUTH_CLIENT_COLUMNS,
            "oauth_clients",
            "oauth_clients",
            filters,
            page,
            _oauth_client,
            descending=False,
        )

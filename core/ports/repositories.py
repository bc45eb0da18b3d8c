"""Repositories: collections of domain objects, hung off a unit of work.

Every adapter (in-memory fake, SQLite, PostgreSQL) passes the same contract
suite in ``tests/contract``; that suite is the precise meaning of these docstrings.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple, Protocol

import attrs

from core.domain.audit import AuditEntry
from core.domain.catalog import Product
from core.domain.pagination import Page, PageRequest
from core.domain.users import RefreshToken, Role, User, UserStatus


@attrs.frozen
class UserFilter:
    role: Role | None = None
    status: UserStatus | None = None
    email: str | None = None  # exact, normalized


@attrs.frozen
class ProductFilter:
    active: bool | None = None
    price_min: int | None = None  # inclusive, minor units
    price_max: int | None = None  # inclusive, minor units
    text: str | None = None  # free text; adapters make it safe for their search engine


class ProductVersion(NamedTuple):
    """Which version of which product: enough to tell whether a copy is current. A
    NamedTuple, not attrs: a catalog page makes 20 and it is the hot path (3x cheaper)."""

    id: str
    version: int


@attrs.frozen
class AuditFilter:
    actor_id: str | None = None
    action: str | None = None
    object_type: str | None = None
    object_id: str | None = None


class UserRepository(Protocol):
    async def add(self, user: User) -> None:
        """Insert; raises EmailTaken if the (normalized) email exists."""

    async def get(self, user_id: str) -> User | None: ...

    async def get_by_email(self, email: str) -> User | None:
        """``email`` is already normalized."""

    async def update(self, user: User) -> None:
        """Persist role, status, password hash and updated_at."""

    async def list(self, page: PageRequest, filter: UserFilter) -> Page[User]:
        """Ordered by id ascending; ``page.after`` is the id of the last user already seen."""


class ProductRepository(Protocol):
    async def add(self, product: Product) -> None:
        """Insert; raises SkuTaken if the sku exists."""

    async def get(self, product_id: str) -> Product | None: ...

    async def get_by_sku(self, sku: str) -> Product | None: ...

    async def update(self, product: Product) -> None:
        """Persist every field. ``product.version`` is the new version; the stored row must
        still be at ``version - 1`` or ConcurrentUpdate is raised. Raises SkuTaken."""

    async def delete(self, product_id: str) -> bool:
        """True if a product was deleted."""

    async def list(self, page: PageRequest, filter: ProductFilter) -> Page[Product]:
        """Ordered by id ascending; ``page.after`` is the id of the last product already seen.
        ``filter.text`` matches words (and word prefixes) of name, sku and description;
        any text is safe, including the search engine's own syntax."""

    async def list_versions(self, page: PageRequest, filter: ProductFilter) -> Page[ProductVersion]:
        """The ids and versions of exactly the page ``list`` returns, in the same order: for
        callers that keep copies of products and only need to know which are current."""

    async def get_many(self, product_ids: Sequence[str]) -> builtins.list[Product]:
        """The products that exist among these ids, in no particular order."""


class RefreshTokenRepository(Protocol):
    async def add(self, token: RefreshToken) -> None: ...

    async def get_by_digest(self, digest: str) -> RefreshToken | None: ...

    async def mark_used(self, token_id: str, at: datetime) -> bool:
        """Mark an unused, unrevoked token used; False if it was not (a replay)."""

    async def revoke_family(self, family_id: str, at: datetime) -> int:
        """Revoke every token of the family not yet revoked; returns how many."""

    async def revoke_all_for_user(self, user_id: str, at: datetime) -> int:
        """Revoke every token of the user not yet revoked; returns how many."""


class AuditLog(Protocol):
    async def append(self, entry: AuditEntry) -> None: ...

    async def list(self, page: PageRequest, filter: AuditFilter) -> Page[AuditEntry]:
        """Newest first (id descending); ``page.after`` is the id of the last entry already seen."""

"""The audit log: writing an entry (inside each use case's own transaction) and reading it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import attrs

from core.domain.audit import AuditEntry
from core.domain.pagination import Page, PageRequest
from core.domain.users import Actor
from core.ports.clock import Clock, IdGenerator
from core.ports.repositories import AuditFilter
from core.ports.unit_of_work import UnitOfWork, UnitOfWorkFactory
from core.services.access import as_admin


class Auditor:
    """The one way a use case appends to the audit log: in its own unit of work, so the
    entry exists exactly when the change it records does."""

    def __init__(self, ids: IdGenerator, clock: Clock):
        self._ids = ids
        self._clock = clock

    async def record(
        self,
        uow: UnitOfWork,
        actor: Actor | None,
        action: str,
        object_type: str,
        object_id: str | None,
        details: dict[str, Any] | None = None,
        *,
        at: datetime | None = None,
    ) -> None:
        """``actor`` None: Tillbox itself (a webhook, the expiry sweep); an OAuth client acting
        as itself is recorded by its client id; an actor without either: the operator at the
        command line, or an anonymous caller (its address kept)."""
        await uow.audit.append(
            AuditEntry(
                id=self._ids.new("aud"),
                at=self._clock.now() if at is None else at,
                actor_id=None if actor is None else actor.user_id or actor.client_id,
                action=action,
                object_type=object_type,
                object_id=object_id,
                source_ip=None if actor is None else actor.source_ip,
                details=details or {},
            )
        )


@attrs.frozen
class ListAuditEntries:
    actor: Actor
    page: PageRequest = attrs.field(factory=PageRequest)
    filter: AuditFilter = attrs.field(factory=AuditFilter)


class AuditService:
    def __init__(self, uow: UnitOfWorkFactory):
        self._uow = uow

    async def list_entries(self, cmd: ListAuditEntries) -> Page[AuditEntry]:
        """Newest first; admins only. The log is the store's longest table: a read that may be slow."""
        await as_admin(self._uow, cmd.actor)
        async with self._uow(readonly=True, slow=True) as uow:
            return await uow.audit.list(cmd.page, cmd.filter)

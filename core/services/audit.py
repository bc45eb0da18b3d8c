"""Reading the audit log (writing happens inside each use case, in its own transaction)."""

from __future__ import annotations

import attrs

from core.domain.audit import AuditEntry
from core.domain.pagination import Page, PageRequest
from core.domain.users import Actor
from core.ports.repositories import AuditFilter
from core.ports.unit_of_work import UnitOfWorkFactory


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
        cmd.actor.require_admin()
        async with self._uow(readonly=True, slow=True) as uow:
            return await uow.audit.list(cmd.page, cmd.filter)

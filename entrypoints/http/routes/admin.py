"""Administration: /api/v1/admin/*."""

from __future__ import annotations

from aiohttp import web

from adapters.serialization import command, to_wire
from core.domain.pagination import PageRequest
from core.ports.repositories import AuditFilter
from core.services.audit import ListAuditEntries
from entrypoints.http.api import Api, Input, Param, Reply, list_response
from entrypoints.http.keys import AUDIT
from entrypoints.http.routes.common import FORBIDDEN, LIST_ERRORS, PAGE, UNAUTHENTICATED
from entrypoints.http.schemas import list_of

api = Api()
_AUDIT_FILTERS = ("actor_id", "action", "object_type", "object_id")

_TEXT = {"type": "string", "minLength": 1, "maxLength": 100}


@api.operation(
    "GET",
    "/api/v1/admin/audit",
    summary="Read the audit log",
    tag="admin",
    auth="admin",
    scope="audit:read",
    query=(
        *PAGE,
        Param("actor_id", _TEXT, "Only what this user did."),
        Param("action", _TEXT, "Only this action, e.g. `auth.login_failed`, `refund.created`."),
        Param("object_type", _TEXT, "Only entries about this kind of object, e.g. `order`."),
        Param("object_id", _TEXT, "Only entries about this object."),
    ),
    replies=(
        Reply(200, "A page of entries, newest first.", list_of("AuditEntry")),
        UNAUTHENTICATED,
        FORBIDDEN,
        *LIST_ERRORS,
    ),
)
async def list_audit_entries(request: web.Request, i: Input) -> web.Response:
    """Who did what to which object, when and from where: logins, role and status changes,
    price and stock changes, payments, refunds, cancellations, fulfilments, key rotations."""
    q = i.query
    page = await request.app[AUDIT].list_entries(
        ListAuditEntries(
            actor=i.actor,
            page=PageRequest(limit=q["limit"], after=q.get("cursor")),
            filter=command(AuditFilter, {name: q[name] for name in _AUDIT_FILTERS if name in q}),
        )
    )
    return list_response(to_wire(page.items), page.next_after)

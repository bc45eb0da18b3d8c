"""The audit log: an append-only record of who did what to which object, when, from where."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import attrs


@attrs.frozen
class AuditEntry:
    id: str
    at: datetime
    actor_id: str | None  # None: the operator at the command line, or an anonymous caller
    action: str  # e.g. "auth.login_succeeded", "user.role_changed", "product.price_changed"
    object_type: str
    object_id: str | None
    source_ip: str | None
    details: dict[str, Any] = attrs.field(factory=dict)

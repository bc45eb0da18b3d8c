"""The console's areas: each a screen reachable by one key from anywhere."""

from __future__ import annotations

import attrs
from textual.screen import Screen

from entrypoints.console.screens.audit import AuditScreen
from entrypoints.console.screens.dashboard import DashboardScreen
from entrypoints.console.screens.keys import KeysScreen


@attrs.frozen
class Area:
    name: str
    key: str
    label: str
    screen: type[Screen[None]]
    admins_only: bool = False


#: In the footer's order. A new area is one line here.
AREAS: tuple[Area, ...] = (
    Area("dashboard", "d", "Dashboard", DashboardScreen),
    Area("audit", "a", "Audit", AuditScreen, admins_only=True),
    Area("keys", "k", "Keys", KeysScreen, admins_only=True),
)

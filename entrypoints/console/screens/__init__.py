"""The console's areas: each a screen reachable by one key from anywhere."""

from __future__ import annotations

import attrs
from textual.screen import Screen

from entrypoints.console.screens.audit import AuditScreen
from entrypoints.console.screens.clients import ClientsScreen
from entrypoints.console.screens.dashboard import DashboardScreen
from entrypoints.console.screens.keys import KeysScreen
from entrypoints.console.screens.orders import OrdersScreen
from entrypoints.console.screens.products import ProductsScreen
from entrypoints.console.screens.users import UsersScreen


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
    Area("orders", "o", "Orders", OrdersScreen),
    Area("products", "p", "Products", ProductsScreen),
    Area("users", "u", "Users", UsersScreen, admins_only=True),
    Area("audit", "a", "Audit", AuditScreen, admins_only=True),
    Area("keys", "k", "Keys", KeysScreen, admins_only=True),
    Area("clients", "c", "Clients", ClientsScreen, admins_only=True),
)

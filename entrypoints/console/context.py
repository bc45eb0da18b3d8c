"""What the console's screens work with: the services, the store's change counter, and the
settings; opened after the sign-in screen is up, so that the console shows at once."""

from __future__ import annotations

from pathlib import Path

import attrs

from core.ports.payments import PaymentGateway
from core.ports.unit_of_work import UnitOfWorkFactory
from core.services.api_keys import ApiKeyService
from core.services.audit import AuditService
from core.services.auth import AuthService
from core.services.catalog import CatalogService
from core.services.clients import ClientService
from core.services.orders import OrderService
from core.services.payments import PaymentService
from core.services.reports import ReportService
from entrypoints.settings import Settings

#: The source the audit log records for everything done in the console.
CONSOLE_SOURCE = "console"


@attrs.frozen
class ConsoleServices:
    auth: AuthService
    catalog: CatalogService
    orders: OrderService
    payments: PaymentService
    audit: AuditService
    api_keys: ApiKeyService
    reports: ReportService
    clients: ClientService
    gateway: PaymentGateway  # the dashboard shows whether card payments can be taken
    store: UnitOfWorkFactory  # its change counter drives the live lists; check_ready the health
    settings: Settings
    data_dir: Path

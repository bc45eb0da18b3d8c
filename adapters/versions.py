"""The one rule for versions (core/ports/repositories.py, OrderRepository.update), as both
stores keep it: an update names the version its entity was read at; if the row was not at
it, nothing was written and the update is a ConcurrentUpdate; otherwise the row moved to
the next version, and so does the entity."""

from __future__ import annotations

from core.domain.catalog import Product
from core.domain.errors import ConcurrentUpdate
from core.domain.orders import Order
from core.domain.payments import Payment, Refund


def moved(changed: int, entity: Product | Order | Payment | Refund, what: str) -> None:
    """After the version-checked UPDATE of ``entity`` that changed ``changed`` rows."""
    if changed != 1:
        raise ConcurrentUpdate(what)
    entity.version += 1

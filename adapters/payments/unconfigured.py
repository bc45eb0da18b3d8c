"""The PaymentGateway of a store without a Stripe secret key: card payments are off, the
rest of the store works.

Every call raises ``Unavailable`` (HTTP 503) with code ``payment_provider_unavailable`` and no
``retry_after``: retrying cannot help until an operator sets ``[stripe] secret_key``, so we do
not invite clients to poll. ``parse_event`` raises the same ``Unavailable`` rather than
``Invalid``: the signature is not wrong, we cannot check it, and a 503 makes Stripe keep
retrying the event (for up to three days), so nothing is lost once the key and the webhook
secret are configured.
"""

from __future__ import annotations

from typing import NoReturn

from core.domain.errors import Unavailable
from core.domain.money import Money
from core.ports.payments import ProviderEvent, ProviderPayment, ProviderRefund

CODE = "payment_provider_unavailable"
MESSAGE = "Card payments are not configured on this store (no Stripe secret key)."


def _unavailable() -> NoReturn:
    raise Unavailable(MESSAGE, code=CODE, retry_after=None)


class UnconfiguredPaymentGateway:
    @property
    def available(self) -> bool:
        return False

    async def create_card_payment(
        self, *, amount: Money, payment_method: str, idempotency_key: str, metadata: dict[str, str]
    ) -> ProviderPayment:
        _unavailable()

    async def get_payment(self, reference: str) -> ProviderPayment:
        _unavailable()

    async def refund(self, *, payment_reference: str, amount: Money, idempotency_key: str) -> ProviderRefund:
        _unavailable()

    def parse_event(self, payload: bytes, signature_header: str | None) -> ProviderEvent | None:
        _unavailable()

    async def close(self) -> None:
        return None

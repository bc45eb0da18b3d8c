"""Payments and refunds, and the one state machine that every payment signal goes through.

A payment hears about itself from several places: the provider's answer to our request,
its webhooks, a later look-up. They arrive in any order and any number of times, so
``Payment.apply`` only ever moves a payment forward, and says whether it moved: whoever
applies a signal acts on the order only when the status changed, which makes each
change happen exactly once.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import attrs

from core.domain.errors import ValidationFailed
from core.domain.money import Money

MAX_REFERENCE_LENGTH = 200
MAX_REASON_LENGTH = 500


class PaymentMethod(enum.StrEnum):
    CARD = "card"
    MANUAL = "manual"  # cash, bank transfer, invoice: staff record it


class PaymentStatus(enum.StrEnum):
    REQUIRES_ACTION = "requires_action"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


PROVIDER_STRIPE = "stripe"
PROVIDER_MANUAL = "manual"

#: How far along a status is; a signal may only move a payment to a higher rank.
#: Failed is not the end: a card payment the provider declined can still be confirmed
#: by the customer and succeed (the provider is the truth about captured money), while
#: succeeded and canceled are final.
_RANK = {
    PaymentStatus.REQUIRES_ACTION: 0,
    PaymentStatus.PROCESSING: 0,
    PaymentStatus.FAILED: 1,
    PaymentStatus.SUCCEEDED: 2,
    PaymentStatus.CANCELED: 2,
}


def check_reference(reference: str | None) -> str:
    """The text staff give for a manual payment (receipt number, transfer reference)."""
    text = (reference or "").strip()
    if not text or len(text) > MAX_REFERENCE_LENGTH:
        raise ValidationFailed({"reference": f"must have 1 to {MAX_REFERENCE_LENGTH} characters"})
    return text


def check_reason(reason: str | None) -> str:
    text = (reason or "").strip()
    if not text or len(text) > MAX_REASON_LENGTH:
        raise ValidationFailed({"reason": f"must have 1 to {MAX_REASON_LENGTH} characters"})
    return text


@attrs.define
class Payment:
    id: str
    order_id: str
    method: PaymentMethod
    provider: str  # "stripe" | "manual"
    status: PaymentStatus
    amount: Money
    created_at: datetime
    updated_at: datetime
    provider_reference: str | None = None  # e.g. Stripe's PaymentIntent id
    client_secret: str | None = None  # for the client to finish a payment that requires action
    next_action: dict[str, Any] | None = None
    failure_code: str | None = None  # e.g. the decline code
    reference: str | None = None  # manual payments: the receipt or transfer reference
    payment_method: str | None = None  # card payments: what the customer paid with ("pm_...")
    version: int = 1  # as read; the repository moves it when it saves

    @property
    def is_settled(self) -> bool:
        """Succeeded or canceled: nothing any signal says can change it any more."""
        return _RANK[self.status] == 2

    def apply(
        self,
        status: PaymentStatus,
        *,
        at: datetime,
        provider_reference: str | None = None,
        client_secret: str | None = None,
        next_action: dict[str, Any] | None = None,
        failure_code: str | None = None,
    ) -> bool:
        """Apply a signal from the provider; True if it changed the status.

        Only forward: a signal of a lower rank than the current status (a late
        "processing", a "failed" after "succeeded") or of the same status changes nothing.
        The provider's reference is kept the first time it is heard, whatever the signal."""
        if provider_reference is not None and self.provider_reference is None:
            self.provider_reference = provider_reference
            self.updated_at = at
        moves = status is not self.status and _RANK[status] >= _RANK[self.status] and not self.is_settled
        if moves:
            self.status = status
            if status is PaymentStatus.REQUIRES_ACTION:
                self.client_secret = client_secret
                self.next_action = next_action
            else:
                # The client secret lets a browser finish the payment: once there is nothing
                # left to finish, it is no longer handed out.
                self.client_secret = None
                self.next_action = None
            self.failure_code = failure_code if status is PaymentStatus.FAILED else None
            self.updated_at = at
        return moves


class RefundStatus(enum.StrEnum):
    PENDING = "pending"  # reserved: counted against what can still be refunded
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@attrs.define
class Refund:
    id: str
    payment_id: str
    order_id: str
    amount: Money
    reason: str
    status: RefundStatus
    created_at: datetime
    updated_at: datetime
    provider_reference: str | None = None
    failure_code: str | None = None
    version: int = 1  # as read; the repository moves it when it saves

    @property
    def counts(self) -> bool:
        """Pending and succeeded refunds count against what was captured; failed ones do not."""
        return self.status is not RefundStatus.FAILED

    def settle(
        self,
        succeeded: bool,
        *,
        at: datetime,
        provider_reference: str | None = None,
        failure_code: str | None = None,
    ) -> bool:
        """A pending refund succeeded or failed; True if it was pending. A settled refund
        stays as it is, so the provider's answer and its webhook settle it once; the
        provider's reference is kept the first time it is heard, whichever settled it."""
        if self.status is not RefundStatus.PENDING:
            if provider_reference is not None and self.provider_reference is None:
                self.provider_reference = provider_reference
                self.updated_at = at
            return False
        self.status = RefundStatus.SUCCEEDED if succeeded else RefundStatus.FAILED
        self.provider_reference = provider_reference or self.provider_reference
        self.failure_code = None if succeeded else failure_code
        self.updated_at = at
        return True

"""Domain errors.

Every error the core raises is a ``DomainError`` of one *kind*. Entry points map
kinds to their own vocabulary (HTTP statuses, exit codes, notifications); the core
never knows about HTTP. ``code`` is the stable machine-readable name clients
branch on, ``message`` is for humans, ``details`` carries structured context.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    code = "error"

    def __init__(self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details: dict[str, Any] = details or {}


# The kinds. Entry points map these (and only these) to statuses.
class Malformed(DomainError):
    """The request cannot be understood as it is (not merely a wrong value): a token of
    ours that is not one, such as a page cursor."""

    code = "bad_request"


class Invalid(DomainError):
    code = "invalid"


class Unauthenticated(DomainError):
    code = "unauthenticated"


class NotAllowed(DomainError):
    code = "forbidden"


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    code = "conflict"


class PreconditionFailed(DomainError):
    code = "precondition_failed"


class PaymentFailed(DomainError):
    code = "payment_failed"


class TooManyRequests(DomainError):
    code = "too_many_requests"

    def __init__(
        self, message: str, *, retry_after: int, code: str | None = None, details: dict[str, Any] | None = None
    ):
        super().__init__(message, code=code, details=details)
        self.retry_after = retry_after


class Unavailable(DomainError):
    code = "unavailable"

    def __init__(
        self,
        message: str,
        *,
        retry_after: int | None = None,
        code: str | None = None,
        details: dict[str, Any] | None = None,
    ):
        super().__init__(message, code=code, details=details)
        self.retry_after = retry_after


# Specific errors: <Thing><Problem>.
class ValidationFailed(Invalid):
    """One or more fields are wrong; ``details["fields"]`` maps field to problem, whether the
    schema of a request or a rule of the domain found it. ``truncated``: there were more
    problems than are listed (``details["truncated"]`` is then true)."""

    code = "validation_failed"

    def __init__(self, fields: dict[str, str], message: str | None = None, *, truncated: bool = False):
        details: dict[str, Any] = {"fields": fields}
        if truncated:
            details["truncated"] = True
        super().__init__(message or _summary(fields, truncated), details=details)


def _summary(fields: dict[str, str], truncated: bool) -> str:
    # One line that is useful where only the message is shown (the CLI, a log).
    if len(fields) == 1 and not truncated:
        name, problem = next(iter(fields.items()))
        return f"{name} {problem}."
    more = " and more" if truncated else ""
    return f"The request has invalid fields: {', '.join(fields)}{more}."


class InvalidCursor(Malformed):
    code = "invalid_cursor"

    def __init__(self) -> None:
        super().__init__(
            "This cursor is not one of this list's, with these sort and filters; pass back"
            " meta.next_cursor exactly as received, with the same query, or leave it out for the first page."
        )


class UserNotFound(NotFound):
    code = "user_not_found"

    def __init__(self, user_id: str):
        super().__init__(f"No user with id {user_id!r}.", details={"user_id": user_id})


class UserEmailNotFound(NotFound):
    """The same kind and code as ``UserNotFound``: the account was named by its email."""

    code = "user_not_found"

    def __init__(self, email: str):
        super().__init__(f"No user with email {email!r}.", details={"email": email})


class ProductNotFound(NotFound):
    code = "product_not_found"

    def __init__(self, ref: str):
        super().__init__(f"No product {ref!r}.", details={"product": ref})


class EmailTaken(Conflict):
    code = "email_taken"

    def __init__(self) -> None:
        super().__init__("An account with this email already exists.")


class SkuTaken(Conflict):
    code = "sku_taken"

    def __init__(self, sku: str):
        super().__init__(f"A product with sku {sku!r} already exists.", details={"sku": sku})


class ConcurrentUpdate(Conflict):
    code = "concurrent_update"

    def __init__(self, what: str):
        super().__init__(f"{what} was changed by another request; reload and retry.")


class VersionMismatch(PreconditionFailed):
    code = "version_mismatch"

    def __init__(self, current_version: int):
        super().__init__(
            "The resource has changed since you read it.",
            details={"current_version": current_version},
        )


class InsufficientStock(Conflict):
    code = "insufficient_stock"

    def __init__(self, lines: list[dict[str, Any]]):
        super().__init__("Not enough stock.", details={"lines": lines})


class RegistrationClosed(NotAllowed):
    code = "registration_closed"

    def __init__(self) -> None:
        super().__init__("Self-registration is turned off on this store.")


class InvalidCredentials(Unauthenticated):
    code = "invalid_credentials"

    def __init__(self) -> None:
        super().__init__("Email or password is wrong.")


class AccountDisabled(NotAllowed):
    code = "account_disabled"

    def __init__(self) -> None:
        super().__init__("This account is disabled.")


class TokenInvalid(Unauthenticated):
    code = "invalid_token"

    def __init__(self, message: str = "The token is invalid or expired."):
        super().__init__(message)


class RefreshTokenReused(Unauthenticated):
    code = "refresh_token_reused"

    def __init__(self) -> None:
        super().__init__("This refresh token was already used; every token of its session is now revoked.")


class AuthenticationRequired(Unauthenticated):
    code = "authentication_required"

    def __init__(self) -> None:
        super().__init__("Sign in first: send Authorization: Bearer <access token>.")


class InsufficientScope(NotAllowed):
    """A delegated credential used for what it was not granted (RFC 6750 §3.1)."""

    code = "insufficient_scope"

    def __init__(self, scope: str):
        super().__init__(f"This credential was not granted the {scope} scope.", details={"scope": scope})
        self.scope = scope


class PermissionDenied(NotAllowed):
    code = "forbidden"

    def __init__(self, message: str = "You are not allowed to do this."):
        super().__init__(message)


class LoginThrottled(TooManyRequests):
    code = "too_many_login_attempts"

    def __init__(self, retry_after: int):
        super().__init__(
            "Too many failed logins; try again later.",
            retry_after=retry_after,
            details={"retry_after": retry_after},
        )


class Throttled(TooManyRequests):
    """A throttle budget is spent; what was being limited decides the error callers see."""

    code = "throttled"

    def __init__(self, retry_after: int):
        super().__init__("Too many attempts; try again later.", retry_after=retry_after)


class RegistrationThrottled(TooManyRequests):
    code = "too_many_registrations"

    def __init__(self, retry_after: int):
        super().__init__(
            "Too many accounts were created from this address; try again later.",
            retry_after=retry_after,
            details={"retry_after": retry_after},
        )


class PasswordHashingBusy(TooManyRequests):
    code = "server_busy"

    def __init__(self, retry_after: int = 2):
        super().__init__(
            "The server is busy checking passwords; try again in a moment.",
            retry_after=retry_after,
            details={"retry_after": retry_after},
        )


class SessionEnded(TokenInvalid):
    code = "session_ended"

    def __init__(self) -> None:
        super().__init__("This session has ended (signed out, password changed or account disabled); sign in again.")


class ApiKeyNotFound(NotFound):
    """Also what a caller hears of a key that is neither theirs nor, for an admin, anyone's."""

    code = "api_key_not_found"

    def __init__(self, key_id: str):
        super().__init__(f"No API key {key_id!r}.", details={"api_key_id": key_id})


class LastAdmin(Conflict):
    code = "last_admin"

    def __init__(self) -> None:
        super().__init__("This is the store's last active admin; make another admin first.")


# Orders and payments.
class OrderNotFound(NotFound):
    """Also what a customer hears for another customer's order: its existence is not theirs to know."""

    code = "order_not_found"

    def __init__(self, order_id: str):
        super().__init__(f"No order with id {order_id!r}.", details={"order_id": order_id})


class PaymentNotFound(NotFound):
    code = "payment_not_found"

    def __init__(self, payment_id: str):
        super().__init__(f"No payment with id {payment_id!r}.", details={"payment_id": payment_id})


class InvalidOrderTransition(Conflict):
    """The order's state machine (PRODUCT.md) does not allow this action from its current status."""

    code = "invalid_order_state"

    def __init__(self, status: str, action: str):
        super().__init__(
            f"An order that is {status} cannot be {_PAST_TENSE.get(action, action)}.",
            details={"status": status, "action": action},
        )


_PAST_TENSE = {
    "pay": "paid",
    "fulfil": "fulfilled",
    "cancel": "cancelled",
    "expire": "expired",
    "refund": "refunded",
}


class UnknownProduct(Invalid):
    """Lines of an order that name no product on sale (unknown or inactive): every such line."""

    code = "unknown_product"

    def __init__(self, lines: list[dict[str, Any]]):
        super().__init__("Some lines name no product on sale.", details={"lines": lines})


class DuplicateProduct(Invalid):
    code = "duplicate_product"

    def __init__(self, product_id: str, lines: list[int]):
        super().__init__(
            "A product appears on more than one line; order it once with the total quantity.",
            details={"product_id": product_id, "lines": lines},
        )


class AmountExceedsBalance(Invalid):
    """A payment larger than what the order still owes: overpayment is refused."""

    code = "amount_exceeds_balance"

    def __init__(self, remaining: int):
        super().__init__(f"The order owes {remaining}; a payment cannot exceed it.", details={"remaining": remaining})


class RefundExceedsCaptured(Invalid):
    code = "refund_exceeds_captured"

    def __init__(self, refundable: int):
        super().__init__(f"At most {refundable} can still be refunded.", details={"refundable": refundable})


class RefundFailed(PaymentFailed):
    code = "refund_failed"


class PaymentProviderUnavailable(Unavailable):
    code = "payment_provider_unavailable"

    def __init__(
        self, message: str = "The payment provider cannot be reached; try again later.", retry_after: int | None = 30
    ):
        details = {} if retry_after is None else {"retry_after": retry_after}
        super().__init__(message, retry_after=retry_after, details=details)


class ProviderReferenceTaken(Conflict):
    code = "provider_reference_taken"

    def __init__(self, reference: str):
        super().__init__(
            f"Another payment already has the provider reference {reference!r}.", details={"reference": reference}
        )


class TransactionConflict(Unavailable):
    """The store gave a transaction up to resolve a conflict with another one (a deadlock,
    a serialization failure): nothing of it was kept, and the use case may simply run again.
    Entry points run it again a few times before they answer with this."""

    code = "transaction_conflict"

    def __init__(self) -> None:
        super().__init__("The request conflicted with a concurrent one and was not applied; try again.", retry_after=1)


class QueryTimedOut(Unavailable):
    """A read ran past its time budget and was stopped; nothing else was affected."""

    code = "query_timeout"

    def __init__(self, budget_ms: int):
        super().__init__(
            f"The query took longer than this server allows ({budget_ms} ms) and was stopped;"
            " narrow it (more words, a price range, a filter) or try again later.",
            details={"budget_ms": budget_ms},
        )


# OAuth clients.
class OAuthClientNotFound(NotFound):
    code = "oauth_client_not_found"

    def __init__(self, client_id: str):
        super().__init__(f"No OAuth client with id {client_id!r}.", details={"client_id": client_id})


class ClientIsPublic(Conflict):
    code = "client_is_public"

    def __init__(self) -> None:
        super().__init__("A public client has no secret: it cannot keep one.")


class InvalidClient(Unauthenticated):
    """Client authentication failed (RFC 6749 §5.2): one answer whatever the reason (an
    unknown client, a wrong or missing secret, a disabled client, a secret sent by a public
    client), so that it tells a guesser nothing."""

    code = "invalid_client"

    def __init__(self) -> None:
        super().__init__("Client authentication failed.")

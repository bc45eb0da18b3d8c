"""A circuit breaker: after repeated provider failures, stop calling the provider for a while.

Closed: calls go through; ``threshold`` consecutive failures open it. Open: calls are refused
for ``reset_seconds`` (``check`` raises ``CircuitOpen`` with the seconds left). Then
half-open: one trial call goes through while the others are still refused; its success
closes the breaker, its failure opens it again for another ``reset_seconds``.

One breaker per process and provider. It keeps no lock: it is used from one event loop and
never awaits, so each method runs without interruption.
"""

from __future__ import annotations

import enum

from core.ports.clock import Clock


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitOpen(Exception):
    def __init__(self, retry_after: float):
        super().__init__(f"circuit open, retry in {retry_after:.1f} s")
        self.retry_after = retry_after


class CircuitBreaker:
    def __init__(self, *, threshold: int, reset_seconds: float, clock: Clock):
        if threshold < 1 or reset_seconds <= 0:
            raise ValueError("a breaker needs threshold >= 1 and reset_seconds > 0")
        self._threshold = threshold
        self._reset_seconds = reset_seconds
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None  # set while open or half-open
        self._trial_running = False

    def _now(self) -> float:
        return self._clock.now().timestamp()

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._now() - self._opened_at < self._reset_seconds:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def seconds_left(self) -> float:
        """How long the breaker stays open (0 when it is not open)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self._reset_seconds - self._now())

    def check(self) -> None:
        """Raise CircuitOpen unless a call may go through now. In half-open state the first
        caller becomes the trial; it must then report success, failure or abandon."""
        state = self.state
        if state is BreakerState.CLOSED:
            return
        if state is BreakerState.OPEN:
            raise CircuitOpen(self.seconds_left())
        if self._trial_running:
            # The trial's verdict is due within one call's time; a short hint is honest.
            raise CircuitOpen(1.0)
        self._trial_running = True

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial_running = False

    def record_failure(self) -> None:
        self._failures += 1
        if self._trial_running or self._failures >= self._threshold:
            self._opened_at = self._now()
        self._trial_running = False

    def abandon(self) -> None:
        """The call ended without a verdict (cancelled): let another caller be the trial."""
        self._trial_running = False

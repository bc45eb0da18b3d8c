"""The circuit breaker on its own, with a clock the test moves."""

from __future__ import annotations

import pytest

from adapters.payments.breaker import BreakerState, CircuitBreaker, CircuitOpen
from tests.fakes import FixedClock


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
def breaker(clock: FixedClock) -> CircuitBreaker:
    return CircuitBreaker(threshold=3, reset_seconds=30, clock=clock)


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.check()
        breaker.record_failure()


def test_it_opens_after_threshold_consecutive_failures(breaker: CircuitBreaker) -> None:
    fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED
    breaker.check()  # still lets calls through

    fail(breaker, 1)

    assert breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpen) as caught:
        breaker.check()
    assert caught.value.retry_after == 30


def test_a_success_resets_the_count(breaker: CircuitBreaker) -> None:
    fail(breaker, 2)
    breaker.check()
    breaker.record_success()
    fail(breaker, 2)

    assert breaker.state is BreakerState.CLOSED


def test_retry_after_counts_down_with_the_clock(breaker: CircuitBreaker, clock: FixedClock) -> None:
    fail(breaker, 3)
    clock.advance(seconds=29.25)

    with pytest.raises(CircuitOpen) as caught:
        breaker.check()

    assert caught.value.retry_after == pytest.approx(0.75)
    assert breaker.seconds_left() == pytest.approx(0.75)


def test_half_open_lets_exactly_one_trial_through(breaker: CircuitBreaker, clock: FixedClock) -> None:
    fail(breaker, 3)
    clock.advance(seconds=30)
    assert breaker.state is BreakerState.HALF_OPEN

    breaker.check()  # the trial
    with pytest.raises(CircuitOpen) as second:
        breaker.check()
    assert second.value.retry_after == 1.0

    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    breaker.check()
    breaker.check()


def test_a_failed_trial_opens_it_for_another_period(breaker: CircuitBreaker, clock: FixedClock) -> None:
    fail(breaker, 3)
    clock.advance(seconds=31)
    breaker.check()

    breaker.record_failure()  # one failure is enough in half-open state

    assert breaker.state is BreakerState.OPEN
    assert breaker.seconds_left() == 30
    clock.advance(seconds=30)
    assert breaker.state is BreakerState.HALF_OPEN


def test_an_abandoned_trial_lets_another_caller_try(breaker: CircuitBreaker, clock: FixedClock) -> None:
    fail(breaker, 3)
    clock.advance(seconds=30)
    breaker.check()

    breaker.abandon()  # e.g. the request was cancelled

    breaker.check()
    assert breaker.state is BreakerState.HALF_OPEN


def test_closed_means_no_wait(breaker: CircuitBreaker) -> None:
    assert breaker.seconds_left() == 0


@pytest.mark.parametrize(("threshold", "reset"), [(0, 30), (3, 0)])
def test_nonsense_settings_are_refused(clock: FixedClock, threshold: int, reset: float) -> None:
    with pytest.raises(ValueError, match="threshold"):
        CircuitBreaker(threshold=threshold, reset_seconds=reset, clock=clock)

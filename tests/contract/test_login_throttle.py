"""The LoginThrottle contract: the in-memory fake and the diskcache adapter behave alike."""

from __future__ import annotations

import asyncio
import pathlib
import threading
from collections.abc import Iterator

import pytest

from adapters.cache.throttle import DiskcacheLoginThrottle
from core.domain.errors import LoginThrottled
from core.ports.identity import LoginThrottle
from tests.fakes import FixedClock, InMemoryLoginThrottle

WINDOW = 900
ALICE = "alice@example.com"
BOB = "bob@example.com"
IP = "203.0.113.7"
OTHER_IP = "198.51.100.2"


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture(params=["in_memory", "diskcache"])
def throttle(request: pytest.FixtureRequest, clock: FixedClock, tmp_path: pathlib.Path) -> Iterator[LoginThrottle]:
    if request.param == "in_memory":
        yield InMemoryLoginThrottle(clock, per_account=5, per_ip=20, window=WINDOW)
    else:
        adapter = DiskcacheLoginThrottle(
            tmp_path / "cache", clock=clock, per_account=5, per_ip=20, window_seconds=WINDOW
        )
        yield adapter
        adapter.close()


async def fail(throttle: LoginThrottle, times: int, email: str = ALICE, ip: str | None = IP) -> None:
    for _ in range(times):
        await throttle.record_failure(email, ip)


async def retry_after(throttle: LoginThrottle, email: str, ip: str | None) -> int | None:
    """Seconds the throttle asks to wait, or None if the login may go ahead."""
    refused: LoginThrottled | None = None
    try:
        await throttle.check(email, ip)
    except LoginThrottled as error:
        refused = error
    if refused is None:
        return None
    assert refused.details == {"retry_after": refused.retry_after}
    return refused.retry_after


async def test_four_failures_do_not_throttle(throttle: LoginThrottle) -> None:
    await fail(throttle, 4)
    assert await retry_after(throttle, ALICE, IP) is None


async def test_five_account_failures_throttle_that_account_only(throttle: LoginThrottle) -> None:
    await fail(throttle, 5)
    assert await retry_after(throttle, ALICE, IP) == WINDOW
    assert await retry_after(throttle, ALICE, OTHER_IP) == WINDOW  # per account, whatever the address
    assert await retry_after(throttle, ALICE, None) == WINDOW
    assert await retry_after(throttle, BOB, IP) is None  # the address has only 5 of its 20


async def test_account_failures_without_an_address_still_count(throttle: LoginThrottle) -> None:
    await fail(throttle, 5, ip=None)
    assert await retry_after(throttle, ALICE, IP) == WINDOW
    assert await retry_after(throttle, BOB, IP) is None


async def test_twenty_failures_from_one_address_throttle_it_across_accounts(throttle: LoginThrottle) -> None:
    for n in range(20):
        await throttle.record_failure(f"user{n}@example.com", IP)  # one failure per account
    assert await retry_after(throttle, "user0@example.com", IP) == WINDOW
    assert await retry_after(throttle, "new@example.com", IP) == WINDOW
    assert await retry_after(throttle, "new@example.com", OTHER_IP) is None
    assert await retry_after(throttle, "new@example.com", None) is None


async def test_nineteen_failures_from_one_address_do_not_throttle_it(throttle: LoginThrottle) -> None:
    for n in range(19):
        await throttle.record_failure(f"user{n}@example.com", IP)
    assert await retry_after(throttle, "new@example.com", IP) is None


async def test_retry_after_is_the_time_until_the_oldest_counting_failure_leaves(
    throttle: LoginThrottle, clock: FixedClock
) -> None:
    await fail(throttle, 1)  # at t0
    clock.advance(seconds=100)
    await fail(throttle, 4)  # at t0 + 100
    assert await retry_after(throttle, ALICE, IP) == WINDOW - 100
    clock.advance(seconds=WINDOW - 100 - 1)
    assert await retry_after(throttle, ALICE, IP) == 1
    clock.advance(seconds=1)  # the first failure has left the window: 4 remain
    assert await retry_after(throttle, ALICE, IP) is None


async def test_retry_after_rounds_up_and_is_at_least_one_second(throttle: LoginThrottle, clock: FixedClock) -> None:
    await fail(throttle, 5)
    clock.advance(seconds=WINDOW - 1.5)
    assert await retry_after(throttle, ALICE, IP) == 2
    clock.advance(seconds=1.25)
    assert await retry_after(throttle, ALICE, IP) == 1  # 0.25 s left
    clock.advance(seconds=0.25)
    assert await retry_after(throttle, ALICE, IP) is None


async def test_with_more_failures_than_the_limit_the_wait_ends_when_the_limit_is_no_longer_reached(
    throttle: LoginThrottle, clock: FixedClock
) -> None:
    for _ in range(7):  # seven failures, a minute apart
        await fail(throttle, 1)
        clock.advance(seconds=60)
    # Failures at 0, 60, …, 360; now = 420. Fewer than 5 remain once the one at 120 has left.
    assert await retry_after(throttle, ALICE, IP) == 120 + WINDOW - 420


async def test_when_both_limits_are_reached_retry_after_is_the_longer_wait(
    throttle: LoginThrottle, clock: FixedClock
) -> None:
    for n in range(20):
        await throttle.record_failure(f"user{n}@example.com", IP)
    clock.advance(seconds=300)
    await fail(throttle, 5, ip=OTHER_IP)
    # The address is free again in 600 s, the account in 900 s: only then may alice log in from IP.
    assert await retry_after(throttle, ALICE, IP) == WINDOW
    assert await retry_after(throttle, "new@example.com", IP) == WINDOW - 300


async def test_the_window_slides(throttle: LoginThrottle, clock: FixedClock) -> None:
    await fail(throttle, 3)
    clock.advance(seconds=WINDOW / 2)
    await fail(throttle, 2)
    assert await retry_after(throttle, ALICE, IP) == WINDOW / 2
    clock.advance(seconds=WINDOW / 2)  # the first three have left; two remain
    assert await retry_after(throttle, ALICE, IP) is None
    await fail(throttle, 2)
    assert await retry_after(throttle, ALICE, IP) is None  # four in the window
    await fail(throttle, 1)
    assert await retry_after(throttle, ALICE, IP) == WINDOW / 2


async def test_success_clears_the_account_failures_but_not_the_address(
    throttle: LoginThrottle, clock: FixedClock
) -> None:
    await fail(throttle, 4)
    await throttle.record_success(ALICE)
    await fail(throttle, 4)
    assert await retry_after(throttle, ALICE, IP) is None  # 4, not 8
    await fail(throttle, 1)
    assert await retry_after(throttle, ALICE, IP) == WINDOW
    await throttle.record_success(ALICE)
    assert await retry_after(throttle, ALICE, IP) is None
    # The address keeps its 9 failures: 11 more from it reach the limit of 20.
    for n in range(11):
        await throttle.record_failure(f"user{n}@example.com", IP)
    assert await retry_after(throttle, BOB, IP) == WINDOW


async def test_success_of_another_account_clears_nothing_of_this_one(throttle: LoginThrottle) -> None:
    await fail(throttle, 5)
    await throttle.record_success(BOB)
    assert await retry_after(throttle, ALICE, IP) == WINDOW


async def test_no_permanent_lockout(throttle: LoginThrottle, clock: FixedClock) -> None:
    # An attacker who keeps trying gets refused, and refused attempts add nothing (the service
    # checks before it verifies a password), so the account opens again one window later.
    for _ in range(10):
        await fail(throttle, 5)
        assert await retry_after(throttle, ALICE, IP) is not None
        clock.advance(seconds=WINDOW)
        assert await retry_after(throttle, ALICE, IP) is None
    clock.advance(days=30)
    assert await retry_after(throttle, ALICE, IP) is None


# diskcache only: what makes it the adapter for several server processes.
def test_diskcache_processes_share_the_counts(clock: FixedClock, tmp_path: pathlib.Path) -> None:
    first = DiskcacheLoginThrottle(tmp_path / "cache", clock=clock)
    second = DiskcacheLoginThrottle(tmp_path / "cache", clock=clock)
    try:
        asyncio.run(fail(first, 3))
        asyncio.run(fail(second, 2))
        assert asyncio.run(retry_after(first, ALICE, IP)) == WINDOW
        asyncio.run(second.record_success(ALICE))
        assert asyncio.run(retry_after(first, ALICE, IP)) is None
    finally:
        first.close()
        second.close()


def test_diskcache_loses_no_failure_under_concurrent_writers(clock: FixedClock, tmp_path: pathlib.Path) -> None:
    # 80 failures from 8 writers (two "processes", four threads each): the read-modify-write
    # of each key is one transaction, so exactly the 80th failure reaches a limit of 80.
    throttles = [DiskcacheLoginThrottle(tmp_path / "cache", clock=clock, per_account=1000, per_ip=80) for _ in range(2)]
    barrier = threading.Barrier(8)

    def writer(throttle: DiskcacheLoginThrottle, n: int) -> None:
        barrier.wait()
        for i in range(10):
            asyncio.run(throttle.record_failure(f"user{n}-{i}@example.com", IP))

    threads = [threading.Thread(target=writer, args=(throttles[n % 2], n)) for n in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert asyncio.run(retry_after(throttles[0], "new@example.com", IP)) == WINDOW
    finally:
        for throttle in throttles:
            throttle.close()

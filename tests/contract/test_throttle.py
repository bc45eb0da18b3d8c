"""The Throttle contract: the in-memory fake, the diskcache adapter and the PostgreSQL one
behave alike."""

from __future__ import annotations

import asyncio
import pathlib
import threading
from collections.abc import AsyncIterator

import pytest

from adapters.cache.throttle import DiskcacheThrottle
from adapters.postgres.shared import PostgresThrottle
from core.domain.errors import Throttled, Unavailable
from core.ports.identity import Throttle, ThrottleBudget, ThrottleTicket
from tests.fakes import FixedClock, InMemoryThrottle
from tests.postgres import emptied_stores

WINDOW = 900
ALICE = ThrottleBudget("login:account:alice@example.com", 5, WINDOW)
BOB = ThrottleBudget("login:account:bob@example.com", 5, WINDOW)
IP = ThrottleBudget("login:ip:203.0.113.7", 20, WINDOW)
OTHER_IP = ThrottleBudget("login:ip:198.51.100.2", 20, WINDOW)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture(params=["in_memory", "diskcache", "postgres"])
async def throttle(
    request: pytest.FixtureRequest, clock: FixedClock, tmp_path: pathlib.Path
) -> AsyncIterator[Throttle]:
    if request.param == "in_memory":
        yield InMemoryThrottle(clock)
    elif request.param == "diskcache":
        adapter = DiskcacheThrottle(tmp_path / "cache", clock=clock)
        yield adapter
        adapter.close()
    else:
        async with emptied_stores(request.getfixturevalue("postgres_url"), clock, pool_max=10) as (database,):
            yield PostgresThrottle(database, clock=clock)


async def take(throttle: Throttle, *budgets: ThrottleBudget, times: int = 1) -> list[ThrottleTicket]:
    return [await throttle.take(budgets) for _ in range(times)]


async def refusal(throttle: Throttle, *budgets: ThrottleBudget) -> int | None:
    """Seconds the throttle asks to wait, or None if the use was granted (and recorded)."""
    try:
        await throttle.take(budgets)
    except Throttled as error:
        refused = error
    else:
        return None
    assert refused.code == "throttled"
    return refused.retry_after


async def test_a_budget_grants_its_limit_then_refuses(throttle: Throttle) -> None:
    await take(throttle, ALICE, IP, times=5)
    assert await refusal(throttle, ALICE, IP) == WINDOW
    assert await refusal(throttle, ALICE, OTHER_IP) == WINDOW  # the account, whatever the address
    assert await refusal(throttle, ALICE) == WINDOW
    assert await refusal(throttle, BOB, IP) is None  # the address has 6 of its 20


async def test_a_refused_take_records_nothing_in_any_budget(throttle: Throttle) -> None:
    await take(throttle, ALICE, times=5)
    for _ in range(30):
        assert await refusal(throttle, ALICE, IP) == WINDOW
    # The address was never charged for the refused attempts: all 20 of its uses are left.
    for n in range(20):
        assert await refusal(throttle, ThrottleBudget(f"login:account:user{n}", 5, WINDOW), IP) is None
    assert await refusal(throttle, BOB, IP) == WINDOW


async def test_nineteen_uses_of_an_address_leave_room_for_one(throttle: Throttle) -> None:
    await take(throttle, IP, times=19)
    assert await refusal(throttle, IP) is None
    assert await refusal(throttle, IP) == WINDOW
    assert await refusal(throttle, OTHER_IP) is None


async def test_retry_after_is_the_time_until_the_oldest_counting_use_leaves(
    throttle: Throttle, clock: FixedClock
) -> None:
    await take(throttle, ALICE)  # at t0
    clock.advance(seconds=100)
    await take(throttle, ALICE, times=4)  # at t0 + 100
    assert await refusal(throttle, ALICE) == WINDOW - 100
    clock.advance(seconds=WINDOW - 100 - 1)
    assert await refusal(throttle, ALICE) == 1
    clock.advance(seconds=1)  # the first use has left the window: 4 remain, room for one
    assert await refusal(throttle, ALICE) is None
    assert await refusal(throttle, ALICE) == 100


async def test_retry_after_rounds_up_and_is_at_least_one_second(throttle: Throttle, clock: FixedClock) -> None:
    await take(throttle, ALICE, times=5)
    clock.advance(seconds=WINDOW - 1.5)
    assert await refusal(throttle, ALICE) == 2
    clock.advance(seconds=1.25)
    assert await refusal(throttle, ALICE) == 1  # 0.25 s left
    clock.advance(seconds=0.25)
    assert await refusal(throttle, ALICE) is None


async def test_when_several_budgets_are_spent_retry_after_is_the_longest_wait(
    throttle: Throttle, clock: FixedClock
) -> None:
    for n in range(20):
        await take(throttle, ThrottleBudget(f"login:account:user{n}", 5, WINDOW), IP)
    clock.advance(seconds=300)
    await take(throttle, ALICE, OTHER_IP, times=5)
    # The address has room again in 600 s, the account in 900 s: only then may alice try from IP.
    assert await refusal(throttle, ALICE, IP) == WINDOW
    assert await refusal(throttle, BOB, IP) == WINDOW - 300


async def test_budgets_of_one_key_with_other_limits_and_windows(throttle: Throttle, clock: FixedClock) -> None:
    hourly = ThrottleBudget("register:ip:203.0.113.7", 3, 3600)
    await take(throttle, hourly, times=3)
    assert await refusal(throttle, hourly) == 3600
    clock.advance(seconds=3599)
    assert await refusal(throttle, hourly) == 1
    clock.advance(seconds=1)
    assert await refusal(throttle, hourly) is None


async def test_the_window_slides(throttle: Throttle, clock: FixedClock) -> None:
    await take(throttle, ALICE, times=3)
    clock.advance(seconds=WINDOW / 2)
    await take(throttle, ALICE, times=2)
    assert await refusal(throttle, ALICE) == WINDOW / 2
    clock.advance(seconds=WINDOW / 2)  # the first three have left; two remain
    await take(throttle, ALICE, times=3)
    assert await refusal(throttle, ALICE) == WINDOW / 2


async def test_give_back_forgets_the_ticket_in_each_of_its_budgets(throttle: Throttle) -> None:
    await take(throttle, ALICE, IP, times=4)
    (last,) = await take(throttle, ALICE, IP)
    assert await refusal(throttle, ALICE) == WINDOW
    await throttle.give_back(last)
    assert await refusal(throttle, ALICE) is None  # its place was free again (and is taken now)
    await take(throttle, IP, times=15)  # the address kept 4 of the 5: 4 + 15 = 19, room for one more
    assert await refusal(throttle, IP) is None
    assert await refusal(throttle, IP) == WINDOW


async def test_give_back_with_reset_clears_the_named_budgets_only(throttle: Throttle) -> None:
    await take(throttle, ALICE, IP, times=4)
    await take(throttle, BOB, IP, times=5)
    (ticket,) = await take(throttle, ALICE, IP)
    await throttle.give_back(ticket, reset=[ALICE.key])
    await take(throttle, ALICE, times=5)  # alice's uses are all gone
    assert await refusal(throttle, ALICE) == WINDOW
    assert await refusal(throttle, BOB) == WINDOW  # bob's are not
    # The address keeps the 9 uses of the attempts not given back: 11 more reach 20.
    await take(throttle, IP, times=11)
    assert await refusal(throttle, IP) == WINDOW


async def test_giving_back_twice_or_an_unknown_ticket_changes_nothing(throttle: Throttle, clock: FixedClock) -> None:
    tickets = await take(throttle, ALICE, times=5)
    await throttle.give_back(tickets[0])
    await throttle.give_back(tickets[0])
    await throttle.give_back(ThrottleTicket(keys=(ALICE.key, "login:ip:unknown"), id="no-such-ticket"))
    assert await refusal(throttle, ALICE) is None  # one place was freed, once
    assert await refusal(throttle, ALICE) == WINDOW


async def test_no_permanent_lockout(throttle: Throttle, clock: FixedClock) -> None:
    # Refused attempts add nothing, so a budget opens again one window after its last granted use.
    for _ in range(10):
        await take(throttle, ALICE, times=5)
        assert await refusal(throttle, ALICE) is not None
        clock.advance(seconds=WINDOW)
    clock.advance(days=30)
    assert await refusal(throttle, ALICE) is None


async def test_concurrent_takes_never_exceed_the_limit(throttle: Throttle) -> None:
    outcomes = await asyncio.gather(*(throttle.take([ALICE, IP]) for _ in range(60)), return_exceptions=True)
    assert sum(isinstance(o, ThrottleTicket) for o in outcomes) == 5
    assert sum(isinstance(o, Throttled) for o in outcomes) == 55


# diskcache only: what makes it the adapter for several server processes.
def test_diskcache_processes_share_the_counts(clock: FixedClock, tmp_path: pathlib.Path) -> None:
    first = DiskcacheThrottle(tmp_path / "cache", clock=clock)
    second = DiskcacheThrottle(tmp_path / "cache", clock=clock)
    try:
        asyncio.run(take(first, ALICE, times=3))
        (ticket,) = asyncio.run(take(second, ALICE))
        asyncio.run(take(second, ALICE))
        assert asyncio.run(refusal(first, ALICE)) == WINDOW
        asyncio.run(first.give_back(ticket))
        assert asyncio.run(refusal(second, ALICE)) is None
    finally:
        first.close()
        second.close()


def test_diskcache_threads_and_processes_never_take_more_than_the_limit(
    clock: FixedClock, tmp_path: pathlib.Path
) -> None:
    # 8 writers (two "processes", four threads each) race for 25 uses of one budget, 10 tries
    # each: the read-check-write of every take is one transaction, so exactly 25 are granted.
    # A take that meets the file's lock for longer than its short timeout is answered
    # Unavailable (the API's 503, "try again"): the writer tries again, as a client would, so
    # that each of the 80 tries ends granted or refused.
    budget = ThrottleBudget("login:ip:203.0.113.7", 25, WINDOW)
    throttles = [DiskcacheThrottle(tmp_path / "cache", clock=clock) for _ in range(2)]
    barrier = threading.Barrier(8)
    granted: list[int] = []
    failures: list[BaseException] = []

    async def tries(throttle: DiskcacheThrottle) -> int:
        count = 0
        for _ in range(10):
            while True:
                try:
                    if await refusal(throttle, budget) is None:
                        count += 1
                    break
                except Unavailable:
                    continue
        return count

    def writer(throttle: DiskcacheThrottle) -> None:
        try:
            barrier.wait()
            granted.append(asyncio.run(tries(throttle)))
        except BaseException as error:  # a dying thread would otherwise only shrink the sum
            failures.append(error)

    threads = [threading.Thread(target=writer, args=(throttles[n % 2],)) for n in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        assert len(granted) == 8
        assert sum(granted) == 25
    finally:
        for throttle in throttles:
            throttle.close()


def test_diskcache_stores_no_key_in_the_clear(clock: FixedClock, tmp_path: pathlib.Path) -> None:
    throttle = DiskcacheThrottle(tmp_path / "cache", clock=clock)
    try:
        asyncio.run(take(throttle, ALICE, IP))
    finally:
        throttle.close()
    stored = b"".join(path.read_bytes() for path in (tmp_path / "cache").rglob("*") if path.is_file())
    assert b"alice@example.com" not in stored
    assert b"203.0.113.7" not in stored

"""The real clock and id generator."""

from __future__ import annotations

import re
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from adapters.clock import SystemClock
from adapters.ids import UlidIds

CROCKFORD_BODY = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")  # 128 bits: the first character carries 3


def test_the_system_clock_is_utc_and_now() -> None:
    before = datetime.now(UTC)
    now = SystemClock().now()
    assert now.tzinfo is UTC
    assert before <= now <= datetime.now(UTC)


def test_ids_are_unique_and_sorted_in_creation_order() -> None:
    ids = UlidIds()
    made = [ids.new("ord") for _ in range(100_000)]
    assert len(set(made)) == len(made)
    assert made == sorted(made)
    for value in made[:1000] + made[-1000:]:
        prefix, body = value.split("_")
        assert prefix == "ord"
        assert CROCKFORD_BODY.match(body), body


def test_the_prefix_is_kept_as_given() -> None:
    ids = UlidIds()
    assert ids.new("usr").startswith("usr_")
    assert ids.new("rtk").startswith("rtk_")
    assert len(ids.new("prd")) == len("prd_") + 26


def test_the_id_starts_with_the_creation_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    body = UlidIds().new("x")[2:]
    after = time.time_ns() // 1_000_000
    millis = 0
    for char in body[:10]:  # 10 characters = 50 bits, of which the top 2 are zero
        millis = millis * 32 + "0123456789ABCDEFGHJKMNPQRSTVWXYZ".index(char)
    assert before <= millis <= after
    assert datetime.fromtimestamp(millis / 1000, UTC) - datetime.now(UTC) < timedelta(seconds=1)


def test_ids_are_unique_across_threads() -> None:
    ids = UlidIds()
    made: list[list[str]] = [[] for _ in range(4)]

    def work(n: int) -> None:
        made[n].extend(ids.new("t") for _ in range(10_000))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [value for chunk in made for value in chunk]
    assert len(set(every)) == 40_000
    for chunk in made:
        assert chunk == sorted(chunk)


def test_ids_stay_sorted_when_the_wall_clock_steps_back(monkeypatch: pytest.MonkeyPatch) -> None:
    ids = UlidIds()
    now = [time.time_ns()]
    monkeypatch.setattr("adapters.ids.time.time_ns", lambda: now[0])
    first = ids.new("x")
    now[0] -= 5_000_000_000  # NTP steps the clock 5 s back
    second = ids.new("x")
    now[0] += 10_000_000_000
    third = ids.new("x")
    assert first < second < third

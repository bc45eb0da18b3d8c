"""The PasswordHasher contract (fake and argon2), then what only argon2 promises."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator

import pytest

from adapters.auth.passwords import Argon2PasswordHasher
from core.domain.errors import PasswordHashingBusy
from core.ports.identity import PasswordHasher
from tests.fakes import FakePasswordHasher

PASSWORD = "correct horse battery staple"
MALFORMED_HASHES = [
    "",
    "not a hash",
    "fake$",
    "$argon2id$",
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$!!!not-base64!!!",
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0",
    "$argon2id$v=19$m=x,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
    "$bcrypt$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
    "\x00" * 64,
]


@pytest.fixture
def argon2_hasher() -> Iterator[Argon2PasswordHasher]:
    hasher = Argon2PasswordHasher(memory_kib=19456, time_cost=2, parallelism=1)
    yield hasher
    hasher.close()


@pytest.fixture(params=["fake", "argon2"])
def hasher(request: pytest.FixtureRequest) -> Iterator[PasswordHasher]:
    if request.param == "fake":
        yield FakePasswordHasher()
    else:
        yield request.getfixturevalue("argon2_hasher")


async def test_the_right_password_verifies(hasher: PasswordHasher) -> None:
    assert await hasher.verify(await hasher.hash(PASSWORD), PASSWORD) is True


@pytest.mark.parametrize(
    "attempt", [PASSWORD.upper(), PASSWORD + " ", PASSWORD[:-1], "", "correct horse battery stapl\u00e9"]
)
async def test_a_wrong_password_does_not(hasher: PasswordHasher, attempt: str) -> None:
    assert await hasher.verify(await hasher.hash(PASSWORD), attempt) is False


@pytest.mark.parametrize("malformed", MALFORMED_HASHES)
async def test_a_malformed_hash_verifies_nothing_and_raises_nothing(hasher: PasswordHasher, malformed: str) -> None:
    assert await hasher.verify(malformed, PASSWORD) is False
    assert await hasher.verify(malformed, "") is False


@pytest.mark.parametrize("password", ["ünïcödé pässwörd ✓", "lone surrogate \ud800 inside", "x" * 128])
async def test_any_text_can_be_a_password(hasher: PasswordHasher, password: str) -> None:
    password_hash = await hasher.hash(password)
    assert await hasher.verify(password_hash, password) is True
    assert await hasher.verify(password_hash, password[:-1]) is False


async def test_a_fresh_hash_needs_no_rehash(hasher: PasswordHasher) -> None:
    assert hasher.needs_rehash(await hasher.hash(PASSWORD)) is False


# argon2 only.
async def test_argon2_makes_argon2id_hashes_with_its_parameters(argon2_hasher: Argon2PasswordHasher) -> None:
    password_hash = await argon2_hasher.hash(PASSWORD)
    assert password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")


async def test_argon2_salts_every_hash(argon2_hasher: Argon2PasswordHasher) -> None:
    first, second = await argon2_hasher.hash(PASSWORD), await argon2_hasher.hash(PASSWORD)
    assert first != second
    assert await argon2_hasher.verify(first, PASSWORD) is True
    assert await argon2_hasher.verify(second, PASSWORD) is True


async def test_argon2_asks_to_rehash_hashes_made_with_other_parameters(argon2_hasher: Argon2PasswordHasher) -> None:
    stronger = Argon2PasswordHasher(memory_kib=19456, time_cost=3)
    try:
        old_hash = await argon2_hasher.hash(PASSWORD)
        assert stronger.needs_rehash(old_hash) is True
        assert await stronger.verify(old_hash, PASSWORD) is True  # old hashes still log in
        assert stronger.needs_rehash(await stronger.hash(PASSWORD)) is False
    finally:
        stronger.close()


@pytest.mark.parametrize("malformed", MALFORMED_HASHES)
def test_argon2_asks_to_rehash_what_it_cannot_read(argon2_hasher: Argon2PasswordHasher, malformed: str) -> None:
    assert argon2_hasher.needs_rehash(malformed) is True


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"memory_kib": 19455}, "memory_kib"),
        ({"memory_kib": 4096, "time_cost": 5}, "memory_kib"),
        ({"time_cost": 1}, "time_cost"),
        ({"memory_kib": 65536, "time_cost": 1}, "time_cost"),
        ({"parallelism": 0}, "parallelism"),
        ({"max_workers": 0}, "max_workers"),
    ],
)
def test_argon2_refuses_parameters_below_the_owasp_minimum(params: dict[str, int], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        Argon2PasswordHasher(**params)


async def test_argon2_hashes_off_the_event_loop(argon2_hasher: Argon2PasswordHasher) -> None:
    # While hashes are computed the loop keeps running other tasks: a ticker that yields to
    # the loop on every step gets many turns. Hashing on the loop thread would give it none.
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    started = ticks
    hashes = await asyncio.gather(*(argon2_hasher.hash(f"{PASSWORD} {n}") for n in range(3)))
    during = ticks - started
    done.set()
    await task
    assert len(set(hashes)) == 3
    assert during > 50


async def test_argon2_close_stops_the_pool() -> None:
    hasher = Argon2PasswordHasher()
    hasher.close()
    with pytest.raises(RuntimeError, match="shutdown"):
        await hasher.hash(PASSWORD)


# Fairness: what keeps a flood of sign-ups from making a sign-in wait.
async def test_a_sign_in_check_goes_before_the_hashes_already_waiting() -> None:
    hasher = Argon2PasswordHasher(max_workers=1, hash_queue_limit=8)
    try:
        stored = await hasher.hash(PASSWORD)
        finished: list[str] = []

        async def run(name: str, call: Awaitable[object]) -> None:
            await call
            finished.append(name)

        first = asyncio.ensure_future(run("hash-1", hasher.hash("first new password")))
        await asyncio.sleep(0)  # it holds the one thread now
        waiting = [asyncio.ensure_future(run(f"hash-{n}", hasher.hash(f"new password {n}"))) for n in (2, 3, 4)]
        await asyncio.sleep(0)
        check = asyncio.ensure_future(run("verify", hasher.verify(stored, PASSWORD)))
        await asyncio.gather(first, *waiting, check)

        assert finished == ["hash-1", "verify", "hash-2", "hash-3", "hash-4"]
    finally:
        hasher.close()


async def test_new_hashes_past_the_queue_limit_are_refused_at_once() -> None:
    hasher = Argon2PasswordHasher(max_workers=1, hash_queue_limit=2, verify_queue_limit=3)
    try:
        stored = await hasher.hash(PASSWORD)
        running = asyncio.ensure_future(hasher.hash("running"))
        await asyncio.sleep(0)
        queued = [asyncio.ensure_future(hasher.hash(f"queued {n}")) for n in range(2)]
        await asyncio.sleep(0)
        assert hasher.waiting == 2

        with pytest.raises(PasswordHashingBusy) as caught:
            await hasher.hash("one too many")
        assert (caught.value.code, caught.value.retry_after) == ("server_busy", 1)
        # Sign-ins are not refused by the sign-ups' limit: they have their own, larger one.
        checks = [asyncio.ensure_future(hasher.verify(stored, PASSWORD)) for _ in range(3)]
        await asyncio.sleep(0)
        with pytest.raises(PasswordHashingBusy):
            await hasher.verify(stored, PASSWORD)
        assert await asyncio.gather(*checks) == [True, True, True]
        await asyncio.gather(running, *queued)
        assert hasher.waiting == 0
    finally:
        hasher.close()


async def test_a_cancelled_caller_never_leaks_a_thread_slot() -> None:
    hasher = Argon2PasswordHasher(max_workers=1, hash_queue_limit=8)
    try:
        running = asyncio.ensure_future(hasher.hash("running"))
        await asyncio.sleep(0)
        gone = asyncio.ensure_future(hasher.hash("given up while waiting"))
        await asyncio.sleep(0)
        gone.cancel()
        running.cancel()  # its thread finishes regardless; the slot is freed when it does
        for task in (gone, running):
            with pytest.raises(asyncio.CancelledError):
                await task
        # The one slot came back: a new call runs (it would wait forever otherwise).
        assert (await asyncio.wait_for(hasher.hash("afterwards"), timeout=30)).startswith("$argon2id$")
        assert hasher.waiting == 0
    finally:
        hasher.close()

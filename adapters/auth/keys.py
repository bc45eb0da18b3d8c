"""Ed25519 signing keys for access tokens, kept as JWK files in one directory.

Layout: ``<directory>/<kid>.json``, one file per key, mode 0600, in a directory of mode 0700::

    {"kid": "<RFC 7638 thumbprint>", "created_at": "2026-…Z",
     "retire_older_at": "2026-…Z" | null, "jwk": {private OKP JWK}}

The newest key signs. A rotation writes a new key whose ``retire_older_at`` (rotation time
+ access-token lifetime + leeway) says until when the keys before it must still verify: one
file written atomically is the whole rotation, so a crash cannot leave it half done, and
several processes (servers, ``tillbox keys rotate``) share the directory safely.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import pathlib
import secrets
import stat
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import attrs
from joserfc.jwk import OKPKey

from adapters.timestamps import format_timestamp, parse_timestamp
from core.ports.clock import Clock

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: rotations are not serialized across processes
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

ALGORITHM = "EdDSA"
# Covers clock skew and servers that keep signing with the old key until they notice a rotation.
RETIREMENT_LEEWAY_SECONDS = 60
_LOCK_FILE = ".lock"


@attrs.frozen
class _Entry:
    kid: str
    key: OKPKey
    created_at: datetime
    retire_older_at: datetime | None
    retire_at: float | None  # unix seconds; None: still verifies whatever the time
    path: pathlib.Path


@attrs.frozen
class _Ring:
    by_kid: dict[str, _Entry]
    signing: _Entry


def parse_document(data: dict[str, Any], where: object) -> _Entry:
    """A key document (the layout above) as a ring entry; raises on anything else."""
    key = OKPKey.import_key(data["jwk"])
    if not key.is_private or key.curve_name != "Ed25519":
        raise ValueError("not a private Ed25519 key")
    kid = key.thumbprint()
    if data["kid"] != kid or (isinstance(where, pathlib.Path) and where.stem != kid):
        raise ValueError("its kid differs from the key's thumbprint or from the file name")
    retire_older_at = data["retire_older_at"]
    return _Entry(
        kid=kid,
        key=key,
        created_at=parse_timestamp(data["created_at"]),
        retire_older_at=parse_timestamp(retire_older_at) if retire_older_at is not None else None,
        retire_at=None,
        path=where if isinstance(where, pathlib.Path) else pathlib.Path(kid),
    )


def build_ring(entries: list[_Entry]) -> _Ring | None:
    """The ring of these keys: the newest signs; each verifies until the earliest
    ``retire_older_at`` of the keys made after it. None without keys."""
    if not entries:
        return None
    entries = sorted(entries, key=lambda e: (e.created_at, e.kid))
    retire_at: float | None = None
    ring: dict[str, _Entry] = {}
    for entry in reversed(entries):
        ring[entry.kid] = attrs.evolve(entry, retire_at=retire_at)
        if entry.retire_older_at is not None:
            at = entry.retire_older_at.timestamp()
            retire_at = at if retire_at is None else min(retire_at, at)
    return _Ring(by_kid=ring, signing=ring[entries[-1].kid])


def new_document(
    existing: _Ring | None, created_at: datetime, *, retire_older_at: datetime | None
) -> tuple[str, dict[str, Any]]:
    """A new key's kid and document, created at ``created_at`` (or just after the newest
    existing key: strictly newer than every one, so "the newest signs" is never a tie)."""
    key = OKPKey.generate_key("Ed25519", private=True)
    kid = key.thumbprint()
    if existing is not None:
        newest = max(e.created_at for e in existing.by_kid.values())
        created_at = max(created_at, newest + timedelta(microseconds=1))
    jwk = {**key.as_dict(private=True), "kid": kid, "use": "sig", "alg": ALGORITHM}
    document = {
        "kid": kid,
        "created_at": format_timestamp(created_at),
        "retire_older_at": format_timestamp(retire_older_at) if retire_older_at is not None else None,
        "jwk": jwk,
    }
    return kid, document


def public_jwks(ring: _Ring, now: float) -> dict[str, list[dict[str, Any]]]:
    """The public keys of a ring that verify tokens at ``now`` (unix seconds), newest first."""
    entries = sorted(ring.by_kid.values(), key=lambda e: e.created_at, reverse=True)
    return {
        "keys": [
            {
                "kty": "OKP",
                "crv": "Ed25519",
                "x": e.key.as_dict(private=False)["x"],
                "kid": e.kid,
                "use": "sig",
                "alg": ALGORITHM,
            }
            for e in entries
            if e.retire_at is None or now <= e.retire_at
        ]
    }


class SigningKeys:
    """The key ring. Cheap on the hot path: a verification is a dict lookup, plus an
    ``os.stat`` of the directory at most every ``recheck_seconds`` to notice another
    process's rotation; an unknown ``kid`` makes it look again, at most every
    ``reload_seconds``. ``clock`` is the process's one clock (the container's): keys are
    created and retired by the same time that stamps and checks the tokens they sign."""

    def __init__(
        self,
        directory: pathlib.Path,
        *,
        clock: Clock,
        recheck_seconds: float = 2.0,
        reload_seconds: float = 1.0,
    ):
        self._dir = pathlib.Path(directory)
        self._clock = clock
        self._recheck_seconds = recheck_seconds
        self._reload_seconds = reload_seconds
        self._ring: _Ring | None = None
        self._seen_mtime_ns: int | None = None
        self._next_recheck = -math.inf
        self._next_forced_reload = -math.inf
        self._lock = threading.RLock()

    # Loading.
    def load(self) -> None:
        """Read the directory (creating it, and a first key, if needed). Raises ValueError
        naming the file if a key file is corrupt or readable by anyone but its owner."""
        with self._lock:
            self._ensure_directory()
            ring = self._read()
            if ring is None:
                with self._exclusive():
                    ring = self._read()  # another process may have won the race
                    if ring is None:
                        self._write_new_key(None, retire_older_at=None)
                        ring = self._read()
            assert ring is not None
            self._ring = ring
            self._next_recheck = time.monotonic() + self._recheck_seconds

    def _current(self) -> _Ring:
        ring = self._ring
        if ring is None:
            self.load()
            ring = self._ring
            assert ring is not None
        elif time.monotonic() >= self._next_recheck:
            self._refresh()
            ring = self._ring
            assert ring is not None
        return ring

    def _refresh(self) -> None:
        """Reload if the directory changed. A broken directory keeps the keys we have (and
        logs): better than refusing every request; ``load()`` reports the problem loudly."""
        with self._lock:
            self._next_recheck = time.monotonic() + self._recheck_seconds
            try:
                mtime = os.stat(self._dir).st_mtime_ns
                if self._seen_mtime_ns is None or mtime != self._seen_mtime_ns:
                    ring = self._read()
                    if ring is not None:
                        self._ring = ring
            except (OSError, ValueError) as error:
                log.error("signing keys: keeping the keys in memory, cannot reload %s: %s", self._dir, error)

    def _read(self) -> _Ring | None:
        mtime_ns = os.stat(self._dir).st_mtime_ns  # before listing: a later change shows as a new mtime
        entries = [e for e in map(self._read_file, sorted(self._dir.glob("*.json"))) if e is not None]
        # "Racy" mtime (as git calls it): a change in the same timestamp tick as this read would
        # not change the mtime again, so trust an mtime only once it is clearly in the past.
        self._seen_mtime_ns = mtime_ns if time.time_ns() - mtime_ns > 2_000_000_000 else None
        return build_ring(entries)

    @staticmethod
    def _read_file(path: pathlib.Path) -> _Entry | None:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None  # pruned by another process since the directory was listed
        except OSError as error:
            raise ValueError(f"signing key file {path} cannot be read: {error.strerror}") from None
        if os.name == "posix" and mode & ~0o600:
            raise ValueError(f"signing key file {path} has mode {mode:04o}; it must be 0600 (chmod 600 {path})")
        try:
            return parse_document(json.loads(text), path)
        except Exception as error:
            # Any parse failure, whatever raised it; the key material is never in the message.
            raise ValueError(f"signing key file {path} is corrupt ({type(error).__name__}: {error})") from None

    # Signing and verifying.
    def signing_key(self) -> tuple[str, OKPKey]:
        """The newest key, which signs every new token: (kid, private key)."""
        entry = self._current().signing
        return entry.kid, entry.key

    def verification_key(self, kid: str) -> OKPKey | None:
        """The key for ``kid`` if it exists and is not retired; an unknown kid may be a key
        another process just made, so the directory is read again (at most once a second)."""
        ring = self._current()
        entry = ring.by_kid.get(kid)
        if entry is None and time.monotonic() >= self._next_forced_reload:
            self._next_forced_reload = time.monotonic() + self._reload_seconds
            self._refresh()
            ring = self._current()
            entry = ring.by_kid.get(kid)
        if entry is None or (entry.retire_at is not None and self._clock.now().timestamp() > entry.retire_at):
            return None
        return entry.key

    def is_active(self, kid: str, now: float) -> bool:
        """Still present and not retired at ``now`` (unix seconds). The hot path of cached tokens."""
        entry = self._current().by_kid.get(kid)
        return entry is not None and (entry.retire_at is None or now <= entry.retire_at)

    def public_jwks(self) -> dict[str, list[dict[str, Any]]]:
        """The public keys that verify tokens now, for a JWKS endpoint."""
        return public_jwks(self._current(), self._clock.now().timestamp())

    # Operations.
    def rotate(self, access_token_ttl_seconds: int) -> str:
        """Make a new key that signs from now on; the older keys keep verifying until every
        token they signed has expired (now + ttl + leeway). Returns the new kid."""
        if access_token_ttl_seconds < 0:
            raise ValueError("access_token_ttl_seconds cannot be negative")
        with self._lock:
            self._ensure_directory()
            with self._exclusive():
                now = self._clock.now()
                kid = self._write_new_key(
                    self._read(),
                    retire_older_at=now + timedelta(seconds=access_token_ttl_seconds + RETIREMENT_LEEWAY_SECONDS),
                )
                self._ring = self._read()
            self._next_recheck = time.monotonic() + self._recheck_seconds
            return kid

    async def rotate_now(self, access_token_ttl_seconds: int) -> str:
        """``rotate`` for callers that may hold either ring (KeyRing): a file is written in
        milliseconds, so here on the caller's thread."""
        return self.rotate(access_token_ttl_seconds)

    def prune(self) -> list[str]:
        """Delete the files of retired keys; returns their kids. The signing key is never retired."""
        with self._lock:
            self._ensure_directory()
            removed: list[str] = []
            with self._exclusive():
                ring = self._read()
                if ring is None:
                    return removed
                now = self._clock.now().timestamp()
                for entry in sorted(ring.by_kid.values(), key=lambda e: e.created_at):
                    if entry.retire_at is not None and now > entry.retire_at and entry is not ring.signing:
                        entry.path.unlink(missing_ok=True)
                        removed.append(entry.kid)
                self._ring = self._read()
            if removed:
                _fsync_directory(self._dir)
            return removed

    # Files.
    def _ensure_directory(self) -> None:
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if os.name == "posix":
            mode = stat.S_IMODE(self._dir.stat().st_mode)
            if mode & 0o022:
                raise ValueError(
                    f"signing key directory {self._dir} has mode {mode:04o}; others can replace keys in it "
                    f"(run: chmod 700 {self._dir})"
                )

    def _exclusive(self) -> contextlib.AbstractContextManager[None]:
        """Serialize key creation across processes, so two servers starting together do not
        each make a 'first' key."""
        return exclusive_lock(self._dir)

    def _write_new_key(self, existing: _Ring | None, *, retire_older_at: datetime | None) -> str:
        kid, document = new_document(existing, self._clock.now(), retire_older_at=retire_older_at)
        write_atomically(self._dir / f"{kid}.json", json.dumps(document, indent=2).encode())
        return kid


@contextlib.contextmanager
def exclusive_lock(directory: pathlib.Path) -> Iterator[None]:
    """Held by the one process that creates or rotates a key in ``directory``."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = os.open(directory / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def write_atomically(path: pathlib.Path, content: bytes) -> None:
    """Temp file (0600 from the start, never readable by others) + fsync + os.replace: readers
    see the old state or the whole new file, never a part."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        if os.name == "posix":
            os.fchmod(fd, 0o600)  # the umask could only narrow it, but say exactly what we mean
        with os.fdopen(fd, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: pathlib.Path) -> None:
    if os.name != "posix":  # pragma: no cover
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""HMAC-SHA256 under the server's own secret key, kept beside the signing keys (or, on
PostgreSQL, in the store: adapters/postgres/shared.py:load_secret)."""

from __future__ import annotations

import hmac
import os
import pathlib
import secrets

from adapters.auth.keys import exclusive_lock, write_atomically

KEY_FILE = "request-digest.key"
KEY_BYTES = 32


class HmacDigest:
    """The key is 256 random bits in ``<keys>/request-digest.key`` (0600, like the signing
    keys), made by the first process that needs it; every process sharing the directory
    uses the same one, so they compute the same digests. Losing it (a restore on another
    machine without the keys directory) only makes stored digests unmatchable: the
    Idempotency-Keys recorded in the last day then answer 422 for their repeats, and every
    personal API key is refused (its owner makes a new one)."""

    def __init__(self, directory: pathlib.Path, *, key: bytes | None = None):
        """``key``: the key itself (where the store keeps it), instead of the directory's file."""
        self._dir = pathlib.Path(directory)
        self._key: bytes | None = key

    def digest(self, data: bytes) -> str:
        return hmac.new(self.load(), data, "sha256").hexdigest()

    def load(self) -> bytes:
        """Read (or make) the key; ValueError naming the file if it is corrupt or readable by
        others. Called at start, so that a broken key stops the server with one line rather
        than failing the requests that need it."""
        if self._key is None:
            self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            path = self._dir / KEY_FILE
            if not path.exists():
                with exclusive_lock(self._dir):
                    if not path.exists():  # another process may have made it meanwhile
                        write_atomically(path, secrets.token_bytes(KEY_BYTES))
            key = path.read_bytes()
            mode = os.stat(path).st_mode & 0o777
            if os.name == "posix" and mode & ~0o600:
                raise ValueError(f"key file {path} has mode {mode:04o}; it must be 0600 (chmod 600 {path})")
            if len(key) != KEY_BYTES:
                raise ValueError(f"key file {path} is corrupt (it must hold {KEY_BYTES} bytes)")
            self._key = key
        return self._key

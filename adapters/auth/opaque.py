"""Refresh tokens and other bearer secrets that are stored only as a digest."""

from __future__ import annotations

import hashlib
import secrets


class Sha256OpaqueTokens:
    """256 random bits, URL-safe. The database keeps SHA-256 of the secret, never the secret:
    a stolen database holds no usable token, and a plain hash suffices because the secret
    has full entropy (no password-style stretching is needed)."""

    def generate(self) -> str:
        return secrets.token_urlsafe(32)

    def digest(self, token: str) -> str:
        return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()

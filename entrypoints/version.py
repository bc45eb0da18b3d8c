"""The version of Tillbox, and the commit it was built from when known."""

from __future__ import annotations

from importlib import import_module, metadata

try:
    VERSION: str = metadata.version("tillbox")
except metadata.PackageNotFoundError:  # a source tree that was not installed, or the binary
    VERSION = "0.1.0"
COMMIT: str | None = None

try:  # written by the binary build (packaging/build.py); absent in a source tree
    _build = import_module("entrypoints._build_info")
except ImportError:
    pass
else:
    VERSION = getattr(_build, "VERSION", VERSION)
    COMMIT = getattr(_build, "COMMIT", None)

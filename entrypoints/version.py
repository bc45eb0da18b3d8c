"""The version of Tillbox, and the commit it was built from when known."""

from __future__ import annotations

from importlib import metadata

try:
    VERSION = metadata.version("tillbox")
except metadata.PackageNotFoundError:  # running from a source tree that was not installed
    VERSION = "0.1.0"

try:  # written by the binary build (packaging/build.py); absent in a source tree
    from entrypoints._build_info import COMMIT  # type: ignore[import-not-found,unused-ignore]
except ImportError:
    COMMIT = None

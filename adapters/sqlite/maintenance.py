"""Backing up and restoring a Tillbox database file.

Backups use SQLite's online backup API in one step: a single read transaction, so
the copy is one consistent snapshot even while a server keeps committing (WAL lets
writers go on meanwhile). Restores check the file first (it opens as SQLite, passes
``integrity_check``, has Tillbox's schema at a version this code knows) and then copy
it in with the same API, which replaces the target in one write transaction.
"""

from __future__ import annotations

import os
import pathlib
import sqlite3

import attrs

from adapters.sqlite.connection import connect
from adapters.sqlite.migrations import LATEST_VERSION, current_version


class BackupError(Exception):
    """A backup or restore cannot be done; the message is one line for the operator."""


@attrs.frozen
class BackupInfo:
    path: pathlib.Path
    size_bytes: int
    schema_version: int


_REQUIRED_TABLES = frozenset({"_migrations", "users", "products", "refresh_tokens", "audit_log"})


def backup(database: pathlib.Path, target: pathlib.Path, *, overwrite: bool = False) -> BackupInfo:
    """Copy a (possibly live) database to ``target``; the copy is checked before it is kept."""
    if not database.is_file():
        raise BackupError(f"there is no database at {database}")
    if target.exists() and not overwrite:
        raise BackupError(f"{target} exists; choose another path or pass --force")
    if target.exists() and target.is_dir():
        raise BackupError(f"{target} is a directory; give a file path")
    partial = target.with_name(f".{target.name}.partial")
    try:
        source = sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)
        try:
            copy = sqlite3.connect(partial)
            try:
                source.backup(copy)  # pages=-1: everything in one step, one snapshot
                copy.execute("PRAGMA journal_mode = DELETE")  # a self-contained single file
            finally:
                copy.close()
        finally:
            source.close()
        info = inspect(partial)
        os.replace(partial, target)
    except OSError as exc:
        raise BackupError(f"cannot write {target}: {exc.strerror or exc}") from None
    except sqlite3.Error as exc:
        raise BackupError(f"backup failed: {exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    return attrs.evolve(info, path=target)


def inspect(path: pathlib.Path) -> BackupInfo:
    """Check that ``path`` is an intact Tillbox database this code can use."""
    if not path.is_file():
        raise BackupError(f"{path} is not a file")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise BackupError(f"{path} cannot be opened: {exc}") from None
    try:
        try:
            (result,) = conn.execute("PRAGMA integrity_check(1)").fetchone()
        except sqlite3.DatabaseError as exc:
            raise BackupError(f"{path} is not a SQLite database ({exc})") from None
        if result != "ok":
            raise BackupError(f"{path} is damaged: integrity_check says {result!r}")
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
        if not tables >= _REQUIRED_TABLES:
            raise BackupError(f"{path} is a SQLite database but not a Tillbox one")
        version = current_version(conn)
    finally:
        conn.close()
    if version > LATEST_VERSION:
        raise BackupError(
            f"{path} has schema version {version}, newer than this Tillbox ({LATEST_VERSION}); use a newer Tillbox"
        )
    return BackupInfo(path=path, size_bytes=path.stat().st_size, schema_version=version)


def restore(source: pathlib.Path, database: pathlib.Path, *, busy_timeout_ms: int = 5000) -> BackupInfo:
    """Replace ``database`` with the checked contents of ``source``. The caller makes sure
    that no server is using the database (see entrypoints.datadir)."""
    info = inspect(source)
    database.parent.mkdir(parents=True, exist_ok=True)
    try:
        src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
        try:
            target = connect(database, busy_timeout_ms=busy_timeout_ms)
            try:
                src.backup(target)
                (result,) = target.execute("PRAGMA integrity_check(1)").fetchone()
                if result != "ok":  # pragma: no cover - the source passed the same check
                    raise BackupError(f"the restored database fails integrity_check: {result!r}")
                target.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                target.close()
        finally:
            src.close()
    except sqlite3.Error as exc:
        raise BackupError(f"restore failed: {exc}") from None
    return info

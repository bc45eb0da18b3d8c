"""Backing up the store the settings name, whichever kind it is: one way for `tillbox backup`
and the console's keys and settings. Blocking (a copy, or pg_dump): the console runs it in a
thread. Raises BackupError (one line for the operator) when it cannot be done: an existing
target without ``overwrite``, a directory, no pg_dump."""

from __future__ import annotations

from pathlib import Path

from entrypoints.container import DATABASE_FILE, uses_postgres
from entrypoints.settings import Settings


def back_up(settings: Settings, target: Path, *, overwrite: bool = False) -> str:
    """Back the store up to ``target``; the line that says what was written."""
    if uses_postgres(settings):
        from adapters.postgres import maintenance

        url = settings["database"]["url"]
        info = maintenance.backup(url, target, overwrite=overwrite)
        return (
            f"backed up the {maintenance.describe(url)} to {info.path} with pg_dump"
            f" ({info.size_bytes} bytes, schema version {info.schema_version})"
        )
    from adapters.sqlite.maintenance import backup

    database = settings.data_dir / DATABASE_FILE
    info = backup(database, target, overwrite=overwrite)
    return f"backed up {database} to {info.path} ({info.size_bytes} bytes, schema version {info.schema_version})"

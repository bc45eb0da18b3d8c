"""The SQLite adapter: the unit of work and repositories over the stdlib sqlite3 driver,
and the schema migrations."""

from adapters.sqlite.database import DatabaseStats, SqliteDatabase
from adapters.sqlite.migrations import LATEST_VERSION, MigrationError, migrate, schema_version
from adapters.sqlite.unit_of_work import SqliteUnitOfWork

__all__ = [
    "LATEST_VERSION",
    "DatabaseStats",
    "MigrationError",
    "SqliteDatabase",
    "SqliteUnitOfWork",
    "migrate",
    "schema_version",
]

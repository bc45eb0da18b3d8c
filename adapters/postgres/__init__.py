"""The PostgreSQL store: the same ports as adapters/sqlite, for several instances sharing one database."""

from adapters.postgres.database import PostgresDatabase

__all__ = ["PostgresDatabase"]

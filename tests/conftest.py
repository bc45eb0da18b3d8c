"""Fixtures every suite may use."""

from tests.postgres import postgres_url  # noqa: F401 - a fixture

"""Fixtures for every test module: the PostgreSQL servers of tests/postgres.py (started only
for the tests that ask for them)."""

from .postgres import pg, postgres, postgres_fsync  # noqa: F401 (fixtures)

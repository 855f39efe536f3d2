"""A throwaway PostgreSQL database on the machine's server (127.0.0.1:5432, user postgres), dropped after."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

PG_HOST = os.environ.get("CRONSHIFT_TEST_PGHOST", "127.0.0.1")
PG_USER = os.environ.get("CRONSHIFT_TEST_PGUSER", "postgres")


def dsn(db: str) -> str:
    return f"host={PG_HOST} port=5432 user={PG_USER} dbname={db} connect_timeout=5"


@pytest.fixture
def pg_db() -> Iterator[str]:
    """A new database's name; skipped (saying why) when no PostgreSQL answers on 127.0.0.1:5432."""
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(dsn("postgres"), autocommit=True)
    except psycopg.Error as e:
        pytest.skip(f"no PostgreSQL at {PG_HOST}:5432 as {PG_USER}: {str(e).strip().splitlines()[0]}")
    name = "cronshift_t_" + uuid.uuid4().hex[:10]
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()

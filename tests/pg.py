"""The PostgreSQL fixtures: a real server (``patchassign.sandbox.postgres``), one per test
session, and a fresh database per test. Never a mock.

Where no server binaries are found the PostgreSQL tests are skipped on a developer's
machine, and fail in CI (``CI`` set): ``.ci/run`` installs the server first.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from patchassign.sandbox.postgres import PostgresServer, postgres_bindir


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresServer]:
    if postgres_bindir() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL server binaries not found (.ci/run installs them)")
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql)")
    with PostgresServer() as server:
        yield server


@pytest.fixture
def pg_url(pg_cluster: PostgresServer) -> str:
    """A PostgreSQL URL of a fresh, empty database on the session's server."""
    return pg_cluster.new_database()

from __future__ import annotations

import pytest

from tests.services.cluster import ENABLED, process_database, start_cluster


@pytest.fixture(scope="session")
def process_database_url():
    """A migrated PostgreSQL database for server processes, shared by the services tests of one run."""
    if not ENABLED:
        pytest.skip("needs DATABASE_URL=postgres://… and REDIS_URL=redis://… (run `make test-services`)")
    with process_database() as url:
        yield url


@pytest.fixture
def cluster(tmp_path, process_database_url, fake_openai):
    """Two daphne processes sharing the services suite's PostgreSQL server and Redis, with a fresh site."""
    with start_cluster(tmp_path, process_database_url, fake_openai.origin) as running:
        yield running

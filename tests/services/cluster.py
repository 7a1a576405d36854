"""Several daphne processes on one PostgreSQL database and one Redis: the deployment the services suite tests.

Use the `cluster` fixture (tests/services/conftest.py): `cluster.servers[0]` and `cluster.servers[1]` are
two daphne processes, `cluster.visitor(i)` opens a visitor WebSocket to process i, `cluster.http(i)` is an
HTTP client for it (admin, webhooks, /healthz), `cluster.manage(...)` runs a management command and
`cluster.query(code)` runs Python in the shared database and returns what it prints as JSON.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest

from tests.ops.servers import Daphne, Visitor, query
from tests.processes import create_site, manage, server_env, wait_for_port

DATABASE_URL = os.environ.get("DATABASE_URL", "")
REDIS_URL = os.environ.get("REDIS_URL", "")
ENABLED = DATABASE_URL.startswith(("postgres://", "postgresql://")) and REDIS_URL.startswith("redis://")

services = pytest.mark.skipif(
    not ENABLED,
    reason="needs DATABASE_URL=postgres://… and REDIS_URL=redis://… (run `make test-services`)",
)


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{credentials + '@' if credentials else ''}127.0.0.1:{port}"))


@contextlib.contextmanager
def process_database(suffix: str = "procs") -> Iterator[str]:
    """Create and migrate a database beside the suite's (`<name>_<suffix>_<pid>`), dropped afterwards."""
    name = f"{urlsplit(DATABASE_URL).path.lstrip('/')}_{suffix}_{os.getpid()}"
    admin = with_database(DATABASE_URL, "postgres")
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')
    url = with_database(DATABASE_URL, name)
    try:
        manage(server_env(url), "migrate", "--noinput", "-v0")
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Cluster:
    env: dict[str, str]
    site_key: str
    servers: list[Daphne] = field(default_factory=list)

    def visitor(self, index: int, token: str | None = None) -> Visitor:
        return Visitor(self.servers[index].url(self.site_key), token=token)

    def http(self, index: int) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.servers[index].port}", timeout=10)

    def manage(self, *args: str) -> str:
        return manage(self.env, *args)

    def query(self, code: str) -> object:
        return query(self.env, code)

    def replies(self) -> list[list]:
        """[role, text, status, client_id] of this cluster's site's messages, oldest first."""
        return self.query(
            "import json; from backend.chat.models import Message; print(json.dumps([[m.role, m.text, m.status,"
            f" m.client_id] for m in Message.objects.filter(conversation__site__key={self.site_key!r})]))"
        )

    def logs(self) -> str:
        return "\n".join(server.log() for server in self.servers)


@contextlib.contextmanager
def start_cluster(
    tmp_path: Path, database_url: str, provider_origin: str, processes: int = 2, **extra_env: str
) -> Iterator[Cluster]:
    """Make a site in the shared database and start `processes` daphne processes on it."""
    env = server_env(database_url, REDIS_URL=REDIS_URL, **extra_env)
    cluster = Cluster(env=env, site_key=create_site(env, provider_origin))
    try:
        cluster.servers = [Daphne(env, tmp_path / f"daphne-{index}.log") for index in range(processes)]
        for server in cluster.servers:
            server.launch()
        for server in cluster.servers:
            wait_for_port(server.port)
        yield cluster
    finally:
        for server in cluster.servers:
            server.stop()

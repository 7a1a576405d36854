from __future__ import annotations

import pytest

from tests.processes import create_site, manage, server_env


@pytest.fixture
def server_db(tmp_path) -> dict[str, str]:
    """The environment of a daphne child process on its own migrated SQLite file."""
    env = server_env(f"sqlite:///{tmp_path / 'server.sqlite3'}")
    manage(env, "migrate", "--noinput", "-v0")
    return env


@pytest.fixture
def shop(server_db, fake_openai) -> str:
    """A site in the child's database whose provider is the fake OpenAI server; returns its key."""
    return create_site(server_db, fake_openai.origin)

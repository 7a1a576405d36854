"""Shared test world: one site "Acme" whose chat goes to a fake OpenAI server on 127.0.0.1.

Acme allows the origin https://acme.example; Globex is a second site, used to prove that one site's
visitors and data never leak into another's.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from channels.testing import WebsocketCommunicator

from backend.asgi import application
from backend.providers.pricing import seed_prices
from backend.quotas import ledger
from backend.sites.provisioning import ProviderSpec, SiteSpec, create_site
from tests.fakes.formats import openai_default
from tests.fakes.server import FakeServer, fixtures

ACME_ORIGIN = "https://acme.example"
GLOBEX_ORIGIN = "https://globex.example"
FAKE_KEY = "sk-test-0123456789abcdefWXYZ"


openai_server, fake_openai = fixtures(openai_default, "openai_server")


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """pytest-django's test database, whose drop at the end PostgreSQL would refuse ("being accessed by other
    users"): the worker threads that ran the consumers' queries keep connections this thread cannot close.
    Every test has finished by then, so those sessions are ended first."""
    yield
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture(autouse=True)
def own_quota_keys(settings) -> Iterator[str]:
    """Give each test its own Redis keys (quotas, configuration stamps): site ids repeat between tests and
    runs of the suite, and keys would not expire."""
    prefix = f"test:quota:{uuid.uuid4().hex}:"
    settings.QUOTA_REDIS_PREFIX = prefix
    url = settings.REDIS_URL  # before a test points it elsewhere
    yield prefix
    if url:
        client, _ = ledger.redis_client(url)
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)


@pytest.fixture(autouse=True)
def fresh_channel_layer() -> None:
    """Each test gets a channel layer of its own. channels_redis counts a layer's receivers and shares one lock
    among them: a receiver left waiting when an earlier test's event loop closed would give the next test's
    consumers that lock, bound to the closed loop (RuntimeError), and end them. daphne runs one loop."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()


@pytest.fixture
def prices(db) -> None:
    """Transactional tests flush the rows the migrations seeded; put the price table back."""
    seed_prices()


@pytest.fixture
def acme(fake_openai: FakeServer, prices):
    return create_site(
        SiteSpec(
            name="Acme",
            origins=[ACME_ORIGIN],
            providers=[ProviderSpec(kind="openai", base_url=f"{fake_openai.origin}/v1", api_key=FAKE_KEY)],
        )
    )


@pytest.fixture
def globex(fake_openai: FakeServer, prices):
    return create_site(
        SiteSpec(
            name="Globex",
            origins=[GLOBEX_ORIGIN],
            providers=[ProviderSpec(kind="openai", base_url=f"{fake_openai.origin}/v1", api_key=FAKE_KEY)],
        )
    )


class Communicator(WebsocketCommunicator):
    """A WebsocketCommunicator whose receives wait 10 s, not 1 s, so a loaded CI machine is not a failure."""

    async def receive_output(self, timeout: float = 10):
        return await super().receive_output(timeout)


@contextlib.asynccontextmanager
async def chat(site_key: str, origin: str | None = ACME_ORIGIN) -> AsyncIterator[WebsocketCommunicator]:
    """Open a visitor WebSocket, always disconnecting afterwards."""
    headers = [(b"origin", origin.encode())] if origin else []
    communicator = Communicator(application, f"/ws/chat/{site_key}/", headers=headers)
    try:
        yield communicator
    finally:
        await communicator.disconnect()


async def connect_and_hello(communicator: WebsocketCommunicator, visitor: str | None = None) -> dict:
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_json_to({"type": "hello", "visitor": visitor})
    ready = await communicator.receive_json_from()
    assert ready["type"] == "ready", ready
    return ready


async def receive_until_end(communicator: WebsocketCommunicator, timeout: float = 5) -> list[dict]:
    """Collect frames up to and including the next `end` frame."""
    frames = []
    while True:
        frame = await communicator.receive_json_from(timeout=timeout)
        frames.append(frame)
        if frame["type"] == "end":
            return frames


@pytest.fixture
def sync_thread_hops(monkeypatch) -> list[None]:
    """Record each hop channels' own dispatch makes to the shared sync thread before a frame or event."""
    import channels.consumer

    hops: list[None] = []

    async def hop() -> None:
        hops.append(None)

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", hop)
    return hops


@pytest.fixture(autouse=True)
def one_provider_call_per_reply(settings) -> None:
    """Core tests script exactly one upstream answer per reply; tests/providers turns retries back on."""
    settings.PROVIDER_MAX_ATTEMPTS = 1
    settings.PROVIDER_RETRY_BASE_SECONDS = 0.01
    settings.PROVIDER_RETRY_MAX_WAIT_SECONDS = 0.05


@pytest.fixture(autouse=True)
def celery_eager():
    """Run Celery tasks in the calling process, so no test needs a broker (the real-worker tests opt out).

    Errors do not propagate: Celery runs a task's retries eagerly only then; tests assert on the rows instead.
    """
    from backend.celery import app

    saved = app.conf.task_always_eager, app.conf.task_eager_propagates
    app.conf.task_always_eager, app.conf.task_eager_propagates = True, False
    yield app
    app.conf.task_always_eager, app.conf.task_eager_propagates = saved

"""Helpers for quota tests: sites with caps, and visitors connecting from chosen IP addresses."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Callable

import pytest
from channels.testing import WebsocketCommunicator
from django.db import connection

from backend.asgi import application
from backend.quotas import ledger
from backend.quotas.models import SiteQuota
from tests.conftest import ACME_ORIGIN


def all_at_once(count: int, work: Callable[[], None]) -> None:
    """Run work in `count` threads released together, each on its own database connection; fail on any error."""
    start = threading.Barrier(count)
    errors: list[Exception] = []

    def worker() -> None:
        try:
            start.wait()
            work()
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connection.close()  # each thread has its own connection

    threads = [threading.Thread(target=worker) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors[:3]


def totals(site) -> dict[str, ledger.Totals]:
    """Today's and this month's totals (billed and held), read through the ledger in use: rows or Redis."""
    from django.utils import timezone

    from backend.quotas.services import get_quota

    day, month = ledger.current().totals(site.pk, get_quota(site.pk), timezone.now())
    return {"day": day, "month": month}


def set_quota(site, **fields) -> SiteQuota:
    """Give the site these quota settings (the rest keep their defaults)."""
    quota, _ = SiteQuota.objects.update_or_create(site=site, defaults=fields)
    return quota


@pytest.fixture
def quota_of():
    return set_quota


@contextlib.asynccontextmanager
async def chat_from(
    site_key: str, ip: str = "203.0.113.7", origin: str = ACME_ORIGIN, headers: list | None = None
) -> AsyncIterator[WebsocketCommunicator]:
    """Open a visitor WebSocket whose peer address is `ip`, always disconnecting afterwards."""
    communicator = WebsocketCommunicator(
        application, f"/ws/chat/{site_key}/", headers=[(b"origin", origin.encode()), *(headers or [])]
    )
    communicator.scope["client"] = (ip, 50000)
    try:
        yield communicator
    finally:
        await communicator.disconnect()


async def hello(communicator: WebsocketCommunicator, visitor: str | None = None) -> dict:
    connected, _ = await communicator.connect(timeout=10)
    assert connected
    await communicator.send_json_to({"type": "hello", "visitor": visitor})
    ready = await communicator.receive_json_from(timeout=10)
    assert ready["type"] == "ready", ready
    return ready

"""A persistent PostgreSQL connection is checked before reuse only after it sat idle (backend/ops/postgresql)."""

from __future__ import annotations

import pytest
from django.db import OperationalError, close_old_connections, connection, connections

from backend.sites.models import Site

pytestmark = [
    pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL (run `make test-services`)"),
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def persistent(monkeypatch):
    """The server's setting (DATABASE_CONN_MAX_AGE > 0), with every health check counted."""
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", None)
    connection.close()
    checks: list[bool] = []
    usable = type(connections["default"]).is_usable

    def counted(self) -> bool:
        checks.append(usable(self))
        return checks[-1]

    monkeypatch.setattr(type(connections["default"]), "is_usable", counted)
    yield checks
    connection.close()


def trip() -> bool:
    """What database_sync_to_async does around each call from a consumer."""
    close_old_connections()
    try:
        return Site.objects.exists() or True
    finally:
        close_old_connections()


def test_a_connection_in_steady_use_is_not_checked_before_each_trip(persistent):
    for _ in range(5):
        trip()
    assert persistent == []


def test_a_connection_idle_for_longer_is_checked_before_its_next_trip(persistent):
    trip()
    connection.steady_until = float("-inf")  # as if STEADY_SECONDS had passed
    trip()
    assert persistent == [True]


def test_a_connection_broken_while_in_steady_use_fails_one_trip_and_the_next_reconnects(persistent):
    trip()
    pid = connection.connection.info.backend_pid
    other = connections.create_connection("default")  # as a database restart would, from outside
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    finally:
        other.close()
    with pytest.raises(OperationalError):
        trip()  # the consumer answers this one with `unavailable`
    assert trip()
    assert connection.connection.info.backend_pid != pid

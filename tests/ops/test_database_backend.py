"""PostgreSQL connections (backend/ops/postgresql): checked before reuse only after they sat idle, and the
history read before each provider call prepared once per connection."""

from __future__ import annotations

import pytest
from django.db import OperationalError, close_old_connections, connection, connections

from backend.chat import services
from backend.chat.models import Conversation, Message, Visitor, hash_token, new_visitor_token
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


def prepared_statements() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [statement for (statement,) in cursor.fetchall()]


def test_the_history_read_before_each_provider_call_is_planned_once_per_connection(persistent, acme):
    visitor = Visitor.objects.create(site=acme, token_hash=hash_token(new_visitor_token()))
    conversation = Conversation.objects.create(site=acme, visitor=visitor)
    Message.objects.create(conversation=conversation, role=Message.Role.USER, text="Hello?", client_id="c1")
    for attempt in range(4):
        state, _, _, existing, recent = services.read_history(conversation, f"c{attempt}")
        assert recent == [("user", "Hello?")] and (existing is not None) == (attempt == 1)
    assert [s for s in prepared_statements() if "LEFT JOIN" in s] != []


def test_preparing_can_be_turned_off_for_connection_poolers(persistent, acme, settings):
    settings.DATABASE_PREPARE_AFTER = 0
    visitor = Visitor.objects.create(site=acme, token_hash=hash_token(new_visitor_token()))
    conversation = Conversation.objects.create(site=acme, visitor=visitor)
    for attempt in range(4):
        services.read_history(conversation, f"c{attempt}")
    assert prepared_statements() == []


def test_queries_of_the_prepared_cursor_are_logged_with_their_text(acme):
    # DEBUG's query log, and every test that counts queries by kind, read the text of each query.
    from django.test.utils import CaptureQueriesContext

    from backend.ops.inserts import insert

    visitor = Visitor.objects.create(site=acme, token_hash=hash_token(new_visitor_token()))
    conversation = Conversation.objects.create(site=acme, visitor=visitor)
    with CaptureQueriesContext(connection) as queries:
        for number in range(4):  # past DATABASE_PREPARE_AFTER: prepared by then
            insert(Message(conversation=conversation, role=Message.Role.USER, text=f"m{number}"))
    assert [query["sql"].split()[:3] for query in queries] == [["INSERT", "INTO", '"chat_message"']] * 4

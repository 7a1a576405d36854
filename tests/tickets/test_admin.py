"""The Tickets admin: filters, the summary on the ticket page, callback attempts inline, retry."""

from __future__ import annotations

import pytest
from django.utils import timezone

from backend.tickets.models import CallbackAttempt, Ticket
from tests.tickets.conftest import GOOD_SUMMARY, good_reply


@pytest.fixture
def tickets(helpdesk):
    urgent = Ticket.objects.create(site=helpdesk, source="webhook", subject="Parcel late", state="done", **GOOD_SUMMARY)
    calm = Ticket.objects.create(
        site=helpdesk,
        source="webhook",
        subject="Invoice question",
        state="done",
        **(GOOD_SUMMARY | {"urgency": "low", "category": "billing", "sentiment": "neutral"}),
    )
    broken = Ticket.objects.create(
        site=helpdesk, source="webhook", subject="Broken one", text="help", state="failed", error="openai answered 503"
    )
    return urgent, calm, broken


def test_the_list_filters_by_urgency_category_and_state(admin_client, tickets):
    page = admin_client.get("/admin/tickets/ticket/", {"urgency__exact": "high"}).content.decode()
    assert "Parcel late" in page and "Invoice question" not in page
    page = admin_client.get("/admin/tickets/ticket/", {"category": "billing"}).content.decode()
    assert "Invoice question" in page and "Parcel late" not in page
    page = admin_client.get("/admin/tickets/ticket/", {"state__exact": "failed"}).content.decode()
    assert "Broken one" in page and "Parcel late" not in page


def test_the_ticket_page_shows_the_summary_and_callback_attempts(admin_client, tickets):
    urgent = tickets[0]
    CallbackAttempt.objects.create(
        ticket=urgent, version=1, number=1, url="https://hooks.example/cb", status_code=503, error="answered 503"
    )
    page = admin_client.get(f"/admin/tickets/ticket/{urgent.pk}/change/").content.decode()
    assert GOOD_SUMMARY["next_action"] in page
    assert "https://hooks.example/cb" in page and "answered 503" in page


def test_the_retry_action_summarizes_a_failed_ticket_again(
    admin_client, tickets, fake_llm, django_capture_on_commit_callbacks
):
    broken = tickets[2]
    fake_llm.queue(good_reply())
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            "/admin/tickets/ticket/", {"action": "retry_summary", "_selected_action": [str(broken.pk)]}
        )
    assert response.status_code == 302
    broken.refresh_from_db()
    assert (broken.state, broken.error, broken.urgency) == ("done", "", "high")


def test_the_admin_cannot_add_tickets_by_hand(admin_client, tickets):
    assert admin_client.get("/admin/tickets/ticket/add/").status_code == 403


def test_the_callback_retry_action_starts_a_fresh_series(
    admin_client, tickets, settings, django_capture_on_commit_callbacks
):
    from tests.fakes.server import FakeServer, Reply

    settings.WEBHOOK_ALLOW_PRIVATE_CALLBACKS = True
    settings.WEBHOOK_CALLBACK_ATTEMPTS = 1
    receiver = FakeServer(lambda _r: Reply(status=500, pieces=[b"no"], content_type="text/plain")).start()
    try:
        urgent = tickets[0]
        Ticket.objects.filter(pk=urgent.pk).update(callback_url=receiver.origin + "/cb", callback_due=timezone.now())
        from backend.tickets.callbacks import deliver

        assert deliver(urgent.pk) is None and deliver(urgent.pk) is None  # one attempt, then it gave up
        receiver.default = lambda _r: Reply(status=204)
        with django_capture_on_commit_callbacks(execute=True):
            admin_client.post(
                "/admin/tickets/ticket/", {"action": "retry_callback", "_selected_action": [str(urgent.pk)]}
            )
    finally:
        receiver.stop()
    attempts = list(
        urgent.callback_attempts.order_by("created").values_list("series", "number", "status_code", "delivered")
    )
    assert attempts == [(1, 1, 500, False), (2, 1, 204, True)]

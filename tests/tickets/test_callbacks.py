"""Callbacks: signed results POSTed to the integrator, retried with backoff, never to private addresses."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from backend.tickets import callbacks
from backend.tickets.callbacks import CallbackRefused, deliver, retry_delay, vetted_address
from backend.tickets.models import CallbackAttempt, Ticket
from tests.fakes.server import FakeServer, Reply
from tests.processes import free_port
from tests.tickets.conftest import GOOD_SUMMARY, TICKET, good_reply


def done_ticket(site, url: str, **fields) -> Ticket:
    """A summarized ticket whose callback is due now, as the summarizer leaves it."""
    return Ticket.objects.create(
        site=site, source="webhook", text="t", state="done", callback_url=url, callback_due=timezone.now(), **fields
    )


def accepted(_request) -> Reply:
    return Reply(status=200, pieces=[b"ok"], content_type="text/plain")


@pytest.fixture
def receiver():
    server = FakeServer(accepted).start()
    yield server
    server.stop()


@pytest.fixture
def private_allowed(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_CALLBACKS = True
    settings.WEBHOOK_RETRY_BASE_SECONDS = 0.01
    return settings


def test_a_callback_that_fails_twice_is_retried_until_accepted_and_signed_each_time(
    api, helpdesk, fake_llm, receiver, private_allowed
):
    fake_llm.queue(good_reply())
    receiver.queue(
        Reply(status=500, pieces=[b"down"], content_type="text/plain"),
        Reply(status=503, pieces=[b"busy"], content_type="text/plain"),
    )
    url = f"{receiver.origin}/hooks/parley?from=test"
    response = api.post(helpdesk, TICKET | {"callback_url": url})
    assert response.status_code == 202
    ticket_id = response.json()["id"]

    assert len(receiver.requests) == 3
    verifier = Webhook(helpdesk.webhook_secret)
    for request in receiver.requests:
        assert request.method == "POST" and request.path == "/hooks/parley?from=test"
        assert request.headers["host"] == f"127.0.0.1:{receiver.port}"
        payload = verifier.verify(request.body, request.headers)  # raises unless signed with the site's secret
        assert payload["type"] == "ticket.done"
        assert payload["data"] == {"id": ticket_id, "status": "done", "summary": GOOD_SUMMARY, "external_id": "ZD-1001"}
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1  # one message, retried

    attempts = list(CallbackAttempt.objects.filter(ticket_id=ticket_id).order_by("number"))
    assert [(a.number, a.status_code, a.delivered) for a in attempts] == [
        (1, 500, False),
        (2, 503, False),
        (3, 200, True),
    ]
    assert 0.008 <= attempts[0].next_retry_seconds <= 0.012
    assert 0.016 <= attempts[1].next_retry_seconds <= 0.024
    assert attempts[2].next_retry_seconds is None


def test_a_delivered_callback_is_not_sent_again(helpdesk, receiver, private_allowed):
    ticket = done_ticket(helpdesk, receiver.origin + "/", summary="s")
    assert deliver(ticket.pk) is None
    assert deliver(ticket.pk) is None
    assert len(receiver.requests) == 1


def test_callbacks_give_up_after_the_configured_attempts(helpdesk, receiver, private_allowed):
    private_allowed.WEBHOOK_CALLBACK_ATTEMPTS = 3
    receiver.default = lambda _r: Reply(status=500, pieces=[b"no"], content_type="text/plain")
    ticket = done_ticket(helpdesk, receiver.origin)
    from backend.tickets import tasks

    tasks.deliver_callback.delay(str(ticket.pk))
    attempts = list(ticket.callback_attempts.order_by("number"))
    assert [a.status_code for a in attempts] == [500, 500, 500]
    assert attempts[-1].next_retry_seconds is None
    assert deliver(ticket.pk) is None and ticket.callback_attempts.count() == 3


def test_a_failed_summary_is_called_back_with_its_error(api, other_site, receiver, private_allowed):
    response = api.post(other_site, {"text": "help", "callback_url": receiver.origin + "/cb"})
    [request] = receiver.requests
    payload = Webhook(other_site.webhook_secret).verify(request.body, request.headers)
    assert payload["type"] == "ticket.failed"
    assert payload["data"] == {
        "id": response.json()["id"],
        "status": "failed",
        "summary": None,
        "error": "the site has no summary or chat provider",
    }


def test_a_network_error_is_logged_and_retried(helpdesk, private_allowed):
    url = f"http://127.0.0.1:{free_port()}/gone"
    ticket = done_ticket(helpdesk, url)
    wait = deliver(ticket.pk)
    assert wait is not None and 0.008 <= wait <= 0.012
    attempt = ticket.callback_attempts.get()
    assert attempt.status_code is None and attempt.error == "network error: ConnectError" and not attempt.delivered


def test_a_redirect_is_not_followed(helpdesk, receiver, private_allowed):
    receiver.queue(Reply(status=302, headers={"Location": "http://169.254.169.254/latest/meta-data/"}))
    ticket = done_ticket(helpdesk, receiver.origin)
    assert deliver(ticket.pk) is not None
    assert len(receiver.requests) == 1
    assert ticket.callback_attempts.get().error == "answered 302"


REFUSED = [
    "http://127.0.0.1:{port}/hook",
    "http://10.1.2.3/hook",
    "http://192.168.1.1/hook",
    "http://172.16.0.1/hook",
    "http://100.64.0.1/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]:{port}/hook",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://[fe80::1]/hook",
    "http://[::ffff:127.0.0.1]:{port}/hook",
    "http://0.0.0.0:{port}/hook",
    "http://224.0.0.1/hook",
    "http://localhost:{port}/hook",
]


@pytest.mark.parametrize("template", REFUSED)
def test_a_callback_to_a_private_address_is_refused_at_send_time(helpdesk, receiver, template, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_CALLBACKS = False
    url = template.format(port=receiver.port)
    with pytest.raises(CallbackRefused):
        vetted_address(url)
    ticket = done_ticket(helpdesk, url)
    assert deliver(ticket.pk) is None  # refused for good: no retry
    attempt = ticket.callback_attempts.get()
    assert not attempt.delivered and attempt.status_code is None
    assert "non-public" in attempt.error or "private" in attempt.error
    assert receiver.requests == []


def test_a_hostname_resolving_to_loopback_is_refused(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_CALLBACKS = False
    with pytest.raises(CallbackRefused, match="localhost resolves to a non-public address"):
        vetted_address("https://localhost/hook")


def test_an_unresolvable_host_is_refused(settings):
    with pytest.raises(CallbackRefused, match="cannot resolve"):
        vetted_address("https://no-such-host.invalid/hook")


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "gopher://example.com/", "https:///x"])
def test_a_callback_with_another_scheme_is_refused(url):
    with pytest.raises(CallbackRefused, match="http"):
        vetted_address(url)


def test_a_public_address_is_allowed_and_pinned_with_its_port():
    assert vetted_address("http://93.184.216.34:8080/hook") == ("93.184.216.34", 8080)
    assert vetted_address("https://[2606:4700:4700::1111]/hook") == ("2606:4700:4700::1111", 443)


def test_retries_wait_the_base_then_twice_as_long_each_time_with_jitter(settings):
    settings.WEBHOOK_RETRY_BASE_SECONDS = 30
    waits = [retry_delay(n) for n in range(1, 8)]
    for n, wait in enumerate(waits):
        assert 0.8 * 30 * 2**n <= wait <= 1.2 * 30 * 2**n
    assert len({round(retry_delay(1), 6) for _ in range(20)}) > 1  # jittered
    # Eight attempts (seven waits) span about an hour by default.
    assert 50 * 60 <= sum(30 * 2**n for n in range(settings.WEBHOOK_CALLBACK_ATTEMPTS - 1)) <= 70 * 60


def test_the_result_payload_matches_the_status_api(api, helpdesk, fake_llm):
    fake_llm.queue(good_reply())
    ticket_id = api.post(helpdesk, TICKET).json()["id"]
    status = api.get(helpdesk, ticket_id, helpdesk.webhook_secret).json()
    assert status == callbacks.result_payload(Ticket.objects.get(pk=ticket_id))
    assert json.dumps(status)


def test_a_callback_not_yet_due_is_not_sent(helpdesk, receiver, private_allowed):
    ticket = done_ticket(helpdesk, receiver.origin)
    Ticket.objects.filter(pk=ticket.pk).update(callback_due=timezone.now() + dt.timedelta(minutes=5))
    assert deliver(ticket.pk) is None
    assert receiver.requests == [] and ticket.callback_attempts.count() == 0


def test_a_duplicate_delivery_task_makes_no_extra_attempt(helpdesk, receiver, private_allowed):
    private_allowed.WEBHOOK_RETRY_BASE_SECONDS = 30
    receiver.default = lambda _r: Reply(status=500, pieces=[b"no"], content_type="text/plain")
    ticket = done_ticket(helpdesk, receiver.origin)
    assert deliver(ticket.pk) is not None
    assert deliver(ticket.pk) is None  # the same task delivered twice by the broker: the retry is not due yet
    assert len(receiver.requests) == 1
    ticket.refresh_from_db()
    assert ticket.callback_due > timezone.now() + dt.timedelta(seconds=20)


def test_a_callback_lost_with_its_worker_is_sent_by_the_sweep(helpdesk, receiver, private_allowed):
    from backend.tickets import tasks

    ticket = done_ticket(helpdesk, receiver.origin)
    Ticket.objects.filter(pk=ticket.pk).update(callback_due=timezone.now() - dt.timedelta(minutes=3))
    assert tasks.requeue_stale_tickets.delay().get() == 1
    assert [a.delivered for a in ticket.callback_attempts.all()] == [True]
    ticket.refresh_from_db()
    assert ticket.callback_due is None
    assert tasks.requeue_stale_tickets.delay().get() == 0

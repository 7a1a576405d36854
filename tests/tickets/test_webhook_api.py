"""POST /api/sites/<key>/tickets/ and GET its url: what an integrator sees, and that nothing leaks."""

from __future__ import annotations

import json

import pytest

from backend.tickets.intake import MAX_BODY_BYTES
from backend.tickets.models import Ticket, WebhookReceipt
from tests.tickets.conftest import GOOD_SUMMARY, SUMMARY_KEY, TICKET, good_reply, signed_headers


def summary_calls(fake_llm) -> int:
    return sum(1 for r in fake_llm.requests if r.path == "/v1/chat/completions")


def test_a_signed_ticket_is_accepted_summarized_and_readable_at_its_url(api, helpdesk, fake_llm, settings):
    fake_llm.queue(good_reply())
    response = api.post(helpdesk, TICKET)
    assert response.status_code == 202
    accepted = response.json()
    assert accepted["status"] == "pending"
    assert accepted["url"] == f"{settings.PUBLIC_URL}/api/sites/{helpdesk.key}/tickets/{accepted['id']}/"

    status = api.get(helpdesk, accepted["id"], helpdesk.webhook_secret)
    assert status.status_code == 200
    assert status.json() == {
        "id": accepted["id"],
        "status": "done",
        "summary": GOOD_SUMMARY,
        "external_id": "ZD-1001",
    }
    sent = fake_llm.requests[0]
    assert sent.headers["authorization"] == f"Bearer {SUMMARY_KEY}"
    assert "My parcel to Oslo is a week late." in json.dumps(sent.json()["messages"])


def test_the_same_webhook_id_again_returns_the_same_ticket_without_a_second_summary(api, helpdesk, fake_llm):
    fake_llm.queue(good_reply())
    first = api.post(helpdesk, TICKET, webhook_id="msg_same").json()
    again = api.post(helpdesk, TICKET | {"subject": "changed"}, webhook_id="msg_same")
    assert again.status_code == 202
    assert again.json()["id"] == first["id"]
    assert again.json()["status"] == "done"
    assert summary_calls(fake_llm) == 1
    assert Ticket.objects.get().subject == "Where is my parcel?"


def test_the_same_webhook_id_on_another_site_is_another_ticket(api, helpdesk, fake_llm, other_site):
    fake_llm.queue(good_reply())
    first = api.post(helpdesk, TICKET, webhook_id="msg_x").json()
    second = api.post(other_site, TICKET, webhook_id="msg_x").json()
    assert first["id"] != second["id"]
    assert Ticket.objects.get(pk=second["id"]).state == "failed"  # Other has no provider at all
    assert Ticket.objects.get(pk=second["id"]).error == "the site has no summary or chat provider"


def test_the_same_external_id_with_new_content_updates_and_summarizes_again(api, helpdesk, fake_llm):
    fake_llm.queue(good_reply(), good_reply(summary="The parcel arrived; the customer thanks the team.", urgency="low"))
    first = api.post(helpdesk, TICKET, webhook_id="msg_1").json()
    update = TICKET | {"messages": [*TICKET["messages"], {"role": "customer", "text": "It arrived, thanks!"}]}
    second = api.post(helpdesk, update, webhook_id="msg_2").json()
    assert second["id"] == first["id"]
    ticket = Ticket.objects.get()
    assert len(ticket.messages) == 3
    assert (ticket.state, ticket.urgency, ticket.version) == ("done", "low", 2)
    assert summary_calls(fake_llm) == 2
    assert WebhookReceipt.objects.filter(ticket=ticket).count() == 2


def test_the_same_external_id_with_the_same_content_is_not_summarized_again(api, helpdesk, fake_llm):
    fake_llm.queue(good_reply())
    first = api.post(helpdesk, TICKET, webhook_id="msg_1").json()
    second = api.post(helpdesk, TICKET, webhook_id="msg_2").json()
    assert second == first | {"status": "done"}
    assert summary_calls(fake_llm) == 1


def test_an_old_webhook_id_replayed_after_an_update_does_not_revert_the_ticket(api, helpdesk, fake_llm):
    fake_llm.queue(good_reply(), good_reply())
    api.post(helpdesk, TICKET, webhook_id="msg_1")
    api.post(helpdesk, TICKET | {"subject": "Parcel found"}, webhook_id="msg_2")
    api.post(helpdesk, TICKET, webhook_id="msg_1")
    assert Ticket.objects.get().subject == "Parcel found"
    assert summary_calls(fake_llm) == 2


def test_text_instead_of_messages_is_accepted(api, helpdesk, fake_llm):
    fake_llm.queue(good_reply())
    response = api.post(helpdesk, {"text": "Contact form: my invoice is wrong."})
    assert response.status_code == 202
    ticket = Ticket.objects.get()
    assert ticket.text == "Contact form: my invoice is wrong." and ticket.external_id is None
    assert "my invoice is wrong" in json.dumps(fake_llm.requests[0].json()["messages"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"subject": "no content"}, "messages"),
        ({"text": "a", "messages": [{"role": "customer", "text": "b"}]}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": "hello"}, "messages"),
        ({"messages": [{"role": "robot", "text": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "customer"}]}, "messages[0].text"),
        ({"messages": [{"role": "customer", "text": "ok"}, {"role": "agent", "text": 5}]}, "messages[1].text"),
        ({"messages": [{"role": "customer", "text": "hi", "at": "last tuesday"}]}, "messages[0].at"),
        ({"messages": [{"role": "customer", "text": "hi", "mood": "sad"}]}, "messages[0].mood"),
        ({"text": "hi", "external_id": 42}, "external_id"),
        ({"text": "hi", "external_id": ""}, "external_id"),
        ({"text": "hi", "subject": "s" * 501}, "subject"),
        ({"text": "hi", "mesages": []}, "mesages"),
        ({"text": "hi", "callback_url": "ftp://files.example/x"}, "callback_url"),
        ({"text": "hi", "callback_url": "https://user:pw@hooks.example/x"}, "callback_url"),
        ({"text": "hi", "callback_url": "https://hooks.example/" + "a" * 2000}, "callback_url"),
        ({"text": "hi", "callback_url": "not a url"}, "callback_url"),
        ({"text": "hi", "callback_url": "http://10.0.0.5/hook"}, "callback_url"),
        (["text"], "body"),
    ],
)
def test_a_schema_error_answers_400_naming_the_field_and_stores_nothing(api, helpdesk, fake_llm, body, field):
    response = api.post(helpdesk, body)
    assert response.status_code == 400, response.content
    assert response.json()["field"] == field
    assert response.json()["error"] == "invalid_field"
    assert Ticket.objects.count() == 0 and WebhookReceipt.objects.count() == 0
    assert fake_llm.requests == []


def test_invalid_json_answers_400(api, helpdesk):
    response = api.post(helpdesk, raw=b'{"text": "unterminated')
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_json" and response.json()["field"] == "body"
    assert Ticket.objects.count() == 0


def test_a_body_over_one_mebibyte_answers_413(api, helpdesk):
    raw = json.dumps({"text": "x" * MAX_BODY_BYTES}).encode()
    response = api.post(helpdesk, raw=raw)
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"
    assert Ticket.objects.count() == 0


def test_a_body_of_exactly_one_mebibyte_is_read(api, helpdesk, fake_llm):
    fake_llm.queue(good_reply())
    prefix, suffix = b'{"text": "', b'"}'
    raw = prefix + b"y" * (MAX_BODY_BYTES - len(prefix) - len(suffix)) + suffix
    assert len(raw) == MAX_BODY_BYTES
    assert api.post(helpdesk, raw=raw).status_code == 202


def test_a_lying_content_length_cannot_push_more_than_the_limit(helpdesk, client):
    # The body is larger than the header claims: only the declared bytes are read, which then fail the signature.
    raw = json.dumps({"text": "z" * (MAX_BODY_BYTES + 10)}).encode()
    headers = signed_headers(helpdesk.webhook_secret, raw)
    response = client.generic(
        "POST",
        f"/api/sites/{helpdesk.key}/tickets/",
        raw,
        content_type="application/json",
        CONTENT_LENGTH="100",
        **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()},
    )
    assert response.status_code == 401
    assert Ticket.objects.count() == 0


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
def test_the_submit_url_answers_405_to_other_methods(client, helpdesk, method):
    response = getattr(client, method)(f"/api/sites/{helpdesk.key}/tickets/")
    assert response.status_code == 405
    assert response["Allow"] == "POST"


def test_the_status_url_answers_405_to_post(client, helpdesk):
    response = client.post(f"/api/sites/{helpdesk.key}/tickets/00000000-0000-0000-0000-000000000000/")
    assert response.status_code == 405 and response["Allow"] == "GET"


def test_an_unknown_site_answers_404(api, helpdesk):
    body = json.dumps(TICKET).encode()
    response = api.client.post(
        "/api/sites/no-such-site/tickets/",
        data=body,
        content_type="application/json",
        **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in signed_headers(helpdesk.webhook_secret, body).items()},
    )
    assert response.status_code == 404
    assert Ticket.objects.count() == 0


def test_the_api_needs_no_csrf_token(helpdesk, fake_llm):
    from django.test import Client

    fake_llm.queue(good_reply())
    strict = Client(enforce_csrf_checks=True)
    body = json.dumps(TICKET).encode()
    response = strict.post(
        f"/api/sites/{helpdesk.key}/tickets/",
        data=body,
        content_type="application/json",
        **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in signed_headers(helpdesk.webhook_secret, body).items()},
    )
    assert response.status_code == 202


class TestStatusAuth:
    @pytest.fixture
    def ticket_id(self, api, helpdesk, fake_llm) -> str:
        fake_llm.queue(good_reply())
        return api.post(helpdesk, TICKET).json()["id"]

    def test_the_right_secret_reads_the_summary(self, api, helpdesk, ticket_id):
        response = api.get(helpdesk, ticket_id, helpdesk.webhook_secret)
        assert response.status_code == 200 and response.json()["summary"]["urgency"] == "high"

    def test_a_wrong_secret_answers_401_without_the_summary(self, api, helpdesk, ticket_id):
        response = api.get(helpdesk, ticket_id, helpdesk.webhook_secret + "x")
        assert response.status_code == 401
        assert "summary" not in response.json() and "parcel" not in response.content.decode()

    def test_a_missing_secret_answers_401(self, api, helpdesk, ticket_id):
        response = api.get(helpdesk, ticket_id)
        assert response.status_code == 401 and response["WWW-Authenticate"] == "Bearer"

    def test_a_basic_auth_header_answers_401(self, api, helpdesk, ticket_id):
        response = api.client.get(
            f"/api/sites/{helpdesk.key}/tickets/{ticket_id}/", HTTP_AUTHORIZATION=f"Basic {helpdesk.webhook_secret}"
        )
        assert response.status_code == 401

    def test_another_sites_ticket_answers_404_even_with_that_sites_own_secret(self, api, other_site, ticket_id):
        response = api.get(other_site, ticket_id, other_site.webhook_secret)
        assert response.status_code == 404
        assert "parcel" not in response.content.decode()

    def test_another_sites_secret_cannot_read_this_sites_ticket(self, api, helpdesk, other_site, ticket_id):
        assert api.get(helpdesk, ticket_id, other_site.webhook_secret).status_code == 401

    def test_an_unknown_or_malformed_ticket_id_answers_404(self, api, helpdesk, ticket_id):
        assert api.get(helpdesk, "00000000-0000-0000-0000-000000000000", helpdesk.webhook_secret).status_code == 404
        assert api.get(helpdesk, "not-a-uuid", helpdesk.webhook_secret).status_code == 404


def test_a_webhook_id_longer_than_200_characters_answers_400(api, helpdesk):
    response = api.post(helpdesk, TICKET, webhook_id="m" * 201)
    assert response.status_code == 400 and response.json()["field"] == "webhook-id"
    assert Ticket.objects.count() == 0


def test_a_declared_length_over_the_limit_answers_413_before_reading(helpdesk, client):
    response = client.generic(
        "POST",
        f"/api/sites/{helpdesk.key}/tickets/",
        b"{}",
        content_type="application/json",
        CONTENT_LENGTH=str(MAX_BODY_BYTES + 1),
    )
    assert response.status_code == 413


def test_a_pending_ticket_reads_as_pending_with_no_summary(helpdesk, client):
    # Without running the queued work (nothing commits inside this test), the ticket stays pending.
    body = json.dumps(TICKET).encode()
    response = client.post(
        f"/api/sites/{helpdesk.key}/tickets/",
        data=body,
        content_type="application/json",
        **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in signed_headers(helpdesk.webhook_secret, body).items()},
    )
    assert response.status_code == 202 and response.json()["status"] == "pending"
    status = client.get(response.json()["url"], HTTP_AUTHORIZATION=f"Bearer {helpdesk.webhook_secret}")
    assert status.json() == {
        "id": response.json()["id"],
        "status": "pending",
        "summary": None,
        "external_id": "ZD-1001",
    }

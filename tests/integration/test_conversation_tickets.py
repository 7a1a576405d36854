"""Conversations become tickets on handoff, contact, close and "Summarize", and agents read the summary.

Every trigger makes one ticket per conversation; triggering again without new messages asks the summary
model nothing more. Celery runs eagerly (tests/conftest.py), so the summary is there when the trigger returns.
"""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from backend.chat.models import Conversation
from backend.tickets.models import Ticket
from tests.agents.conftest import conversation_for, login
from tests.conftest import chat, connect_and_hello, receive_until_end
from tests.integration.conftest import SHOP_ORIGIN, SUMMARY, summary_reply

db = database_sync_to_async
INBOX = "/admin/chat/conversation/"


def page(conversation) -> str:
    return f"{INBOX}{conversation.pk}/change/"


def tickets_of(conversation) -> list[Ticket]:
    return list(Ticket.objects.filter(conversation=conversation))


def assert_summary_shown(html: str) -> None:
    for text in (SUMMARY["summary"], "refunds", "High", "Negative", SUMMARY["next_action"], 'data-state="done"'):
        assert text in html, text


def complaint(site):
    return conversation_for(
        site, texts=[("user", "My kettle arrived broken, I want a refund."), ("assistant", "Sorry to hear that!")]
    )


# -- the visitor's side (WebSocket) ------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
async def test_a_visitor_handoff_makes_one_summarized_ticket(shop, summary_llm):
    summary_llm.queue(summary_reply())
    async with chat(shop.key, SHOP_ORIGIN) as ws:
        ready = await connect_and_hello(ws)
        await ws.send_json_to({"type": "message", "id": "c1", "text": "My kettle arrived broken."})
        await receive_until_end(ws)
        await ws.send_json_to({"type": "handoff"})
        assert await ws.receive_json_from() == {"type": "status", "state": "waiting"}
        await ws.send_json_to({"type": "handoff"})  # again: nothing changes
        assert await ws.receive_json_from() == {"type": "status", "state": "waiting"}
    tickets = await db(lambda: list(Ticket.objects.filter(conversation_id=ready["conversation"])))()
    assert len(tickets) == 1
    ticket = tickets[0]
    assert (ticket.state, ticket.reason, ticket.source, ticket.site_id) == ("done", "handoff", "conversation", shop.pk)
    assert ticket.summary_dict() == SUMMARY
    assert len(summary_llm.requests) == 1
    assert "Customer: My kettle arrived broken." in summary_llm.requests[0].body.decode()


@pytest.mark.django_db(transaction=True)
async def test_a_handoff_before_the_visitor_wrote_anything_makes_no_ticket(shop, summary_llm):
    async with chat(shop.key, SHOP_ORIGIN) as ws:
        ready = await connect_and_hello(ws)
        await ws.send_json_to({"type": "handoff"})
        assert await ws.receive_json_from() == {"type": "status", "state": "waiting"}
    assert not await db(Ticket.objects.filter(conversation_id=ready["conversation"]).exists)()
    assert summary_llm.requests == []


@pytest.mark.django_db(transaction=True)
async def test_leaving_an_email_keeps_the_conversation_as_a_ticket(shop, summary_llm):
    summary_llm.queue(summary_reply(), summary_reply(urgency="normal"))
    async with chat(shop.key, SHOP_ORIGIN) as ws:
        ready = await connect_and_hello(ws)
        await ws.send_json_to({"type": "message", "id": "c1", "text": "Is anyone there? My kettle is broken."})
        await receive_until_end(ws)
        await ws.send_json_to({"type": "contact", "email": "kari@example.com"})
        assert await ws.receive_json_from() == {"type": "status", "state": "waiting"}
        # The same email again: the ticket is not summarized twice.
        await ws.send_json_to({"type": "contact", "email": "kari@example.com"})
        await ws.send_json_to({"type": "ping"})
        assert await ws.receive_json_from() == {"type": "pong"}
    tickets = await db(lambda: list(Ticket.objects.filter(conversation_id=ready["conversation"])))()
    assert [(t.state, t.reason) for t in tickets] == [("done", "contact")]
    assert len(summary_llm.requests) == 1
    conversation = await db(Conversation.objects.select_related("visitor").get)(pk=ready["conversation"])
    assert conversation.visitor.email == "kari@example.com"


@pytest.mark.django_db(transaction=True)
async def test_a_bad_contact_email_makes_no_ticket(shop, summary_llm):
    async with chat(shop.key, SHOP_ORIGIN) as ws:
        ready = await connect_and_hello(ws)
        await ws.send_json_to({"type": "message", "id": "c1", "text": "Hello?"})
        await receive_until_end(ws)
        await ws.send_json_to({"type": "contact", "email": "not an email"})
        frame = await ws.receive_json_from()
        assert (frame["type"], frame["code"]) == ("error", "bad_request")
    assert not await db(Ticket.objects.filter(conversation_id=ready["conversation"]).exists)()
    assert summary_llm.requests == []


# -- the agent's side (admin) ------------------------------------------------------------------------------
def test_closing_on_the_conversation_page_summarizes_and_the_page_shows_it(
    shop, ann, summary_llm, django_capture_on_commit_callbacks
):
    summary_llm.queue(summary_reply())
    conversation = complaint(shop)
    client = login(ann)
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(page(conversation), {"action": "close"}).status_code == 302
    with django_capture_on_commit_callbacks(execute=True):
        client.post(page(conversation), {"action": "close"})  # already closed: nothing new
    [ticket] = tickets_of(conversation)
    assert (ticket.state, ticket.reason) == ("done", "close")
    assert len(summary_llm.requests) == 1
    html = client.get(page(conversation)).content.decode()
    assert_summary_shown(html)


def test_the_summarize_button_summarizes_once_until_new_messages_arrive(
    shop, ann, summary_llm, django_capture_on_commit_callbacks
):
    summary_llm.queue(summary_reply())
    conversation = complaint(shop)
    client = login(ann)
    before = client.get(page(conversation)).content.decode()
    assert 'value="summarize"' in before and "No ticket yet" in before
    for _ in range(2):
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(page(conversation), {"action": "summarize"}, follow=True)
        assert "Summary requested" in response.content.decode()
    [ticket] = tickets_of(conversation)
    assert (ticket.state, ticket.reason) == ("done", "manual")
    assert len(summary_llm.requests) == 1
    assert_summary_shown(client.get(page(conversation)).content.decode())


def test_the_inbox_summarize_action_makes_one_ticket_per_conversation(
    shop, ann, summary_llm, django_capture_on_commit_callbacks
):
    summary_llm.queue(summary_reply(), summary_reply(category="shipping"))
    first, second = complaint(shop), complaint(shop)
    client = login(ann)
    for _ in range(2):
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(
                INBOX, {"action": "summarize_selected", "_selected_action": [str(first.pk), str(second.pk)]}
            )
        assert response.status_code == 302
    assert len(tickets_of(first)) == len(tickets_of(second)) == 1
    assert Ticket.objects.count() == 2
    assert len(summary_llm.requests) == 2


def test_the_inbox_close_action_summarizes_each_closed_conversation(
    shop, ann, summary_llm, django_capture_on_commit_callbacks
):
    summary_llm.queue(summary_reply())
    conversation = complaint(shop)
    with django_capture_on_commit_callbacks(execute=True):
        login(ann).post(INBOX, {"action": "close_selected", "_selected_action": [str(conversation.pk)]})
    [ticket] = tickets_of(conversation)
    assert (ticket.state, ticket.reason) == ("done", "close")
    assert Conversation.objects.get(pk=conversation.pk).state == "closed"


def test_an_agent_cannot_summarize_another_sites_conversation(
    shop, globex, gus, summary_llm, django_capture_on_commit_callbacks
):
    conversation = complaint(shop)
    client = login(gus)
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(page(conversation), {"action": "summarize"}).status_code == 404
        client.post(INBOX, {"action": "summarize_selected", "_selected_action": [str(conversation.pk)]})
    assert Ticket.objects.count() == 0
    assert summary_llm.requests == []


def test_a_failed_summary_shows_its_reason_and_summarize_tries_again(
    shop, ann, summary_llm, django_capture_on_commit_callbacks
):
    from tests.fakes.structured import openai_structured_error

    summary_llm.queue(openai_structured_error(401, "Incorrect API key provided", "invalid_request_error"))
    conversation = complaint(shop)
    client = login(ann)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(page(conversation), {"action": "summarize"})
    html = client.get(page(conversation)).content.decode()
    assert 'data-state="failed"' in html and "The summary failed" in html
    summary_llm.queue(summary_reply())
    with django_capture_on_commit_callbacks(execute=True):
        client.post(page(conversation), {"action": "summarize"})
    assert_summary_shown(client.get(page(conversation)).content.decode())
    assert len(tickets_of(conversation)) == 1


def test_staff_who_may_only_view_conversations_cannot_summarize(
    shop, summary_llm, agents_group, django_capture_on_commit_callbacks
):
    from django.contrib.auth.models import Permission

    from tests.agents.conftest import make_agent

    viewer = make_agent("vic", "Vic", "Viewer", shop)
    viewer.groups.clear()
    viewer.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_conversation", "view_message", "view_ticket"])
    )
    conversation = complaint(shop)
    client = login(viewer)
    html = client.get(page(conversation)).content.decode()
    assert "No ticket yet" in html and 'value="summarize"' not in html
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(page(conversation), {"action": "summarize"}).status_code == 403
    assert Ticket.objects.count() == 0 and summary_llm.requests == []


def test_the_ticket_panel_is_refreshed_by_the_live_page(shop, ann):
    html = login(ann).get(page(complaint(shop))).content.decode()
    assert 'data-swap="parley-head parley-transcript parley-ticket"' in html
    assert 'id="parley-ticket"' in html


def test_new_messages_after_a_summary_update_the_same_ticket_on_close(
    shop, ann, summary_llm, django_capture_on_commit_callbacks
):
    from backend.chat.models import Message

    summary_llm.queue(summary_reply(), summary_reply(urgency="low", sentiment="positive"))
    conversation = complaint(shop)
    client = login(ann)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(page(conversation), {"action": "summarize"})
    Message.objects.create(conversation=conversation, role="user", text="Never mind, the refund arrived. Thanks!")
    with django_capture_on_commit_callbacks(execute=True):
        client.post(page(conversation), {"action": "close"})
    [ticket] = tickets_of(conversation)
    assert (ticket.reason, ticket.urgency, ticket.sentiment, ticket.version) == ("close", "low", "positive", 2)
    assert len(summary_llm.requests) == 2
    assert "the refund arrived" in summary_llm.requests[1].body.decode()
    html = client.get(page(conversation)).content.decode()
    assert "Low" in html and "Positive" in html

"""Tickets from conversations: one per conversation, summarized on handoff, close or an agent's request."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.template.loader import render_to_string

from backend.agents.events import agents_conversation_group
from backend.chat.models import Conversation, Message, Visitor
from backend.tickets.models import Ticket
from backend.tickets.services import queue_conversation_summary, summarize_conversation
from tests.tickets.conftest import GOOD_SUMMARY, good_reply


@pytest.fixture
def conversation(helpdesk) -> Conversation:
    visitor = Visitor.objects.create(site=helpdesk, token_hash="h" * 64)
    conversation = Conversation.objects.create(site=helpdesk, visitor=visitor)
    Message.objects.create(conversation=conversation, role="user", text="My parcel is late.")
    Message.objects.create(conversation=conversation, role="assistant", text="I can connect you with a person.")
    Message.objects.create(conversation=conversation, role="system", text="handoff requested")
    Message.objects.create(conversation=conversation, role="agent", author="Bob", text="Hi, Bob here. Checking.")
    return conversation


def test_a_handoff_summarizes_the_conversation_into_its_ticket(conversation, fake_llm):
    fake_llm.queue(good_reply())
    ticket = summarize_conversation(conversation.pk, "handoff")
    assert (ticket.state, ticket.source, ticket.reason, ticket.site_id) == (
        "done",
        "conversation",
        "handoff",
        conversation.site_id,
    )
    assert ticket.summary_dict() == GOOD_SUMMARY
    assert [m["role"] for m in ticket.messages] == ["customer", "assistant", "agent"]
    prompt = json.dumps(fake_llm.requests[0].json()["messages"])
    assert "Customer: My parcel is late." in prompt
    assert "Agent (Bob): Hi, Bob here. Checking." in prompt
    assert "handoff requested" not in prompt
    assert conversation.ticket == ticket


def test_summarizing_again_without_new_messages_reuses_the_summary(conversation, fake_llm):
    fake_llm.queue(good_reply())
    first = summarize_conversation(conversation.pk, "handoff")
    second = summarize_conversation(conversation.pk, "close")
    assert first.pk == second.pk and Ticket.objects.count() == 1
    assert len(fake_llm.requests) == 1


def test_new_messages_update_the_same_ticket_and_summarize_again(conversation, fake_llm):
    fake_llm.queue(good_reply(), good_reply(urgency="low", sentiment="positive"))
    first = summarize_conversation(conversation.pk, "handoff")
    Message.objects.create(conversation=conversation, role="user", text="Found it, thank you!")
    second = summarize_conversation(conversation.pk, "close")
    assert second.pk == first.pk and Ticket.objects.count() == 1
    assert (second.urgency, second.sentiment, second.reason, second.version) == ("low", "positive", "close", 2)
    assert len(second.messages) == 4


def test_a_failed_conversation_summary_is_tried_again_when_asked(conversation, fake_llm):
    from tests.fakes.structured import openai_structured_error

    fake_llm.queue(openai_structured_error(401, "bad key", "invalid_request_error"), good_reply())
    assert summarize_conversation(conversation.pk, "handoff").state == "failed"
    assert summarize_conversation(conversation.pk, "manual").state == "done"


def test_a_finished_or_failed_summary_tells_the_conversations_open_pages_to_refresh(conversation, fake_llm):
    """The conversation page refreshes its ticket panel on any live event (backend/agents/static/agents/live.js)."""
    from tests.fakes.structured import openai_structured_error

    layer = get_channel_layer()
    page = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(agents_conversation_group(conversation.pk), page)
    fake_llm.queue(openai_structured_error(401, "bad key", "invalid_request_error"), good_reply())
    summarize_conversation(conversation.pk, "handoff")
    summarize_conversation(conversation.pk, "manual")

    async def events() -> list[dict]:
        return [(await layer.receive(page))["event"] for _ in range(2)]

    told = async_to_sync(events)()  # in one event loop: the Redis layer's receive buffer belongs to one
    assert told == [
        {"kind": "ticket", "state": state, "conversation": str(conversation.pk)} for state in ("failed", "done")
    ]


def test_an_unknown_conversation_gives_no_ticket(helpdesk):
    import uuid

    assert summarize_conversation(uuid.uuid4(), "close") is None
    assert Ticket.objects.count() == 0


def test_queueing_a_summary_runs_it_in_the_worker_after_commit(
    conversation, fake_llm, django_capture_on_commit_callbacks
):
    fake_llm.queue(good_reply())
    with django_capture_on_commit_callbacks(execute=True) as queued:
        queue_conversation_summary(conversation.pk, "manual")
        assert Ticket.objects.count() == 0  # nothing is sent before the transaction commits
    assert len(queued) >= 1
    assert Ticket.objects.get(conversation=conversation).state == "done"


def test_the_summary_include_shows_the_summary_on_a_conversation_page(conversation, fake_llm):
    fake_llm.queue(good_reply())
    summarize_conversation(conversation.pk, "handoff")
    conversation.refresh_from_db()
    html = render_to_string("tickets/summary.html", {"ticket": conversation.ticket})
    assert GOOD_SUMMARY["summary"].replace("'", "&#x27;") in html
    assert "High" in html and "shipping" in html
    assert render_to_string("tickets/summary.html", {"ticket": None}).strip() == ""

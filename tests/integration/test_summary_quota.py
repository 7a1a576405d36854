"""Summary calls count against the site's caps like chat: reserved first, settled into the usage ledger."""

from __future__ import annotations

import io
import json
from decimal import Decimal

import pytest
from django.core.management import call_command

from backend.providers.base import ChatMessage
from backend.quotas.models import UsageRecord
from backend.quotas.services import prompt_upper_bound, usage_summary
from backend.tickets import summarizer
from backend.tickets.models import Ticket
from backend.tickets.services import open_conversation_ticket, summarize_conversation
from tests.agents.conftest import conversation_for
from tests.fakes.structured import openai_structured_error
from tests.integration.conftest import summary_reply
from tests.quotas.conftest import set_quota

pytestmark = pytest.mark.django_db


def usage_json(site) -> dict:
    out = io.StringIO()
    call_command("usage", "--json", "--", site.key, stdout=out)
    return json.loads(out.getvalue())


def held_tokens(site) -> int:
    """Tokens that replies and summaries in progress hold today, read with either ledger."""
    return usage_summary(site.pk)["day"]["reserved_tokens"]


def complaint(site):
    return conversation_for(site, texts=[("user", "My kettle arrived broken, I want a refund.")])


def summary_prompt_bound(conversation) -> int:
    """The prompt bound the summarizer reserves for, computed from the ticket as the worker renders it."""
    ticket = open_conversation_ticket(conversation.pk, "manual")
    text = summarizer.transcript(ticket)
    return prompt_upper_bound(summarizer.SYSTEM_PROMPT, [ChatMessage("user", f"The ticket:\n\n{text}")])


def test_summary_tokens_and_cost_appear_in_the_usage_command(shop, summary_llm):
    summary_llm.queue(summary_reply())  # billed 120 input + 40 output tokens of gpt-4o-mini
    ticket = summarize_conversation(complaint(shop).pk, "manual")
    assert ticket.state == "done"
    usage = usage_json(shop)
    # 120 × 0.15 + 40 × 0.60 USD per million tokens
    assert usage["day"]["tokens"] == usage["month"]["tokens"] == 160
    assert usage["day"]["cost"] == usage["month"]["cost"] == "0.000042"
    assert Decimal(usage["day"]["cost"]) == ticket.cost
    [record] = UsageRecord.objects.filter(site=shop)
    assert (record.model, record.input_tokens, record.output_tokens, record.status) == (
        "gpt-4o-mini",
        120,
        40,
        "complete",
    )
    assert held_tokens(shop) == 0


def test_a_site_at_its_cap_gets_no_summary_call_and_the_ticket_fails_with_the_reason(shop, summary_llm):
    set_quota(shop, daily_token_cap=50)
    ticket = summarize_conversation(complaint(shop).pk, "handoff")
    assert summary_llm.requests == []
    assert ticket.state == "failed"
    assert ticket.error.startswith("quota: the site's day tokens cap is reached")
    assert usage_json(shop)["day"]["tokens"] == 0
    assert not UsageRecord.objects.exists()
    assert held_tokens(shop) == 0


def test_a_refused_summary_is_made_once_the_cap_allows_it(shop, summary_llm):
    conversation = complaint(shop)
    set_quota(shop, daily_cost_cap=Decimal("0"))
    assert summarize_conversation(conversation.pk, "close").state == "failed"
    set_quota(shop, daily_cost_cap=Decimal("1.00"))
    summary_llm.queue(summary_reply())
    ticket = summarize_conversation(conversation.pk, "manual")
    assert (ticket.state, ticket.error) == ("done", "")
    assert len(summary_llm.requests) == 1
    assert Ticket.objects.count() == 1


def test_the_reply_budget_is_lowered_to_what_the_cap_leaves(shop, summary_llm):
    conversation = complaint(shop)
    set_quota(shop, daily_token_cap=summary_prompt_bound(conversation) + 100)
    summary_llm.queue(summary_reply())
    assert summarize_conversation(conversation.pk, "manual").state == "done"
    assert summary_llm.requests[0].json()["max_tokens"] == 100
    day = usage_summary(shop.pk)["day"]
    assert (day["tokens"], day["reserved_tokens"]) == (160, 0)


def test_a_failed_summary_call_bills_nothing_and_frees_its_hold(shop, summary_llm):
    summary_llm.queue(openai_structured_error(401, "Incorrect API key provided", "invalid_request_error"))
    ticket = summarize_conversation(complaint(shop).pk, "manual")
    assert ticket.state == "failed"
    [record] = UsageRecord.objects.filter(site=shop)
    assert (record.status, record.input_tokens, record.output_tokens, record.cost) == ("error", 0, 0, 0)
    assert usage_json(shop)["day"]["tokens"] == 0
    assert held_tokens(shop) == 0


def test_the_retry_on_invalid_json_is_reserved_and_billed_too(shop, summary_llm):
    summary_llm.queue(summary_reply(urgency="whenever"), summary_reply())
    ticket = summarize_conversation(complaint(shop).pk, "manual")
    assert ticket.state == "done"
    assert len(summary_llm.requests) == 2
    assert usage_json(shop)["day"]["tokens"] == 320
    assert UsageRecord.objects.filter(site=shop, status="complete").count() == 2


def test_a_conversations_summary_counts_in_what_that_conversation_cost(shop, summary_llm):
    from backend.quotas.admin import usage_page_context

    summary_llm.queue(summary_reply())  # billed 120 input + 40 output tokens
    conversation = complaint(shop)
    summarize_conversation(conversation.pk, "manual")
    [record] = UsageRecord.objects.filter(site=shop)
    assert record.conversation_id == conversation.pk
    [costliest] = usage_page_context(shop)["costliest"]
    assert costliest["conversation"] == conversation.pk
    assert (costliest["tokens"], costliest["cost"]) == (160, Decimal("0.000042"))

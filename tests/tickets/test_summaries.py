"""Summaries through each wire protocol's JSON mode, validated, retried once when invalid, failing clearly."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from backend.providers.base import Endpoint
from backend.sites.provisioning import ProviderSpec, SiteSpec, create_site
from backend.tickets import tasks
from backend.tickets.models import Ticket
from backend.tickets.services import stale_ticket_ids
from backend.tickets.summarizer import (
    SUMMARY_SCHEMA,
    SummaryError,
    Usage,
    claim,
    summarize_ticket,
    summarize_with,
    validation_problem,
)
from tests.fakes.structured import (
    anthropic_error,
    anthropic_tool,
    gemini_error,
    gemini_json,
    ollama_error,
    ollama_json,
    openai_json,
    openai_structured_error,
)
from tests.tickets.conftest import GOOD_SUMMARY, SUMMARY_KEY, good_reply

KEY = "key-structured-0123456789"


def endpoint(kind: str, protocol: str, base_url: str, model: str) -> Endpoint:
    return Endpoint(kind=kind, protocol=protocol, base_url=base_url, model=model, api_key=KEY)


PROTOCOLS = {
    "chat_completions": {
        "endpoint": lambda origin: endpoint("openai", "chat_completions", f"{origin}/v1", "gpt-4o-mini"),
        "valid": lambda data: openai_json(json.dumps(data), usage=(120, 40)),
        "invalid": lambda: openai_json('Here you go: {"summary": "cut', usage=(120, 40)),
        "error": lambda: openai_structured_error(401, "Incorrect API key provided.", "invalid_request_error"),
        "path": "/v1/chat/completions",
        "usage": (120, 40),
    },
    "anthropic": {
        "endpoint": lambda origin: endpoint("anthropic", "anthropic", origin, "claude-haiku-4-5"),
        "valid": lambda data: anthropic_tool(data, usage=(130, 45)),
        "invalid": lambda: anthropic_tool({"summary": "Late parcel.", "urgency": "very"}, usage=(130, 45)),
        "error": lambda: anthropic_error(401, "authentication_error", "invalid x-api-key"),
        "path": "/v1/messages",
        "usage": (130, 45),
    },
    "gemini": {
        "endpoint": lambda origin: endpoint("gemini", "gemini", f"{origin}/v1beta", "gemini-2.5-flash-lite"),
        "valid": lambda data: gemini_json(json.dumps(data), usage=(110, 30), thoughts=5),
        "invalid": lambda: gemini_json('{"summary": "Late parcel."', usage=(110, 30), thoughts=5),
        "error": lambda: gemini_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key."),
        "path": "/v1beta/models/gemini-2.5-flash-lite:generateContent",
        "usage": (110, 35),
    },
    "ollama": {
        "endpoint": lambda origin: endpoint("ollama", "ollama", origin, "llama3.2"),
        "valid": lambda data: ollama_json(json.dumps(data), usage=(100, 30)),
        "invalid": lambda: ollama_json(json.dumps(GOOD_SUMMARY | {"sentiment": "furious"}), usage=(100, 30)),
        "error": lambda: ollama_error(404, 'model "llama3.2" not found, try pulling it first'),
        "path": "/api/chat",
        "usage": (100, 30),
    },
}


def assert_asks_for_json_in_its_format(protocol: str, sent) -> None:
    body = sent.json()
    if protocol == "chat_completions":
        assert sent.headers["authorization"] == f"Bearer {KEY}"
        assert body["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "ticket_summary", "strict": True, "schema": SUMMARY_SCHEMA},
        }
        assert body["messages"][0]["role"] == "system"
    elif protocol == "anthropic":
        assert sent.headers["x-api-key"] == KEY and sent.headers["anthropic-version"] == "2023-06-01"
        assert body["tools"][0]["name"] == "ticket_summary" and body["tools"][0]["input_schema"] == SUMMARY_SCHEMA
        assert body["tool_choice"] == {"type": "tool", "name": "ticket_summary"}
        assert body["max_tokens"] > 0 and isinstance(body["system"], str)
        assert body["messages"][0]["role"] == "user"
    elif protocol == "gemini":
        assert sent.headers["x-goog-api-key"] == KEY
        assert body["generationConfig"]["responseMimeType"] == "application/json"
        assert body["generationConfig"]["responseJsonSchema"] == SUMMARY_SCHEMA
        assert body["systemInstruction"]["parts"][0]["text"]
    else:
        assert "authorization" not in sent.headers
        assert body["format"] == SUMMARY_SCHEMA and body["stream"] is False


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_each_protocol_asks_for_json_in_its_own_format_and_reads_it_back(protocol, fake_llm, prices):
    spec = PROTOCOLS[protocol]
    fake_llm.queue(spec["valid"](GOOD_SUMMARY))
    usage = Usage()
    data = summarize_with(spec["endpoint"](fake_llm.origin), "Customer: my parcel is late", usage)
    assert data == GOOD_SUMMARY
    [sent] = fake_llm.requests
    assert sent.method == "POST" and sent.path == spec["path"]
    assert_asks_for_json_in_its_format(protocol, sent)
    assert "my parcel is late" in json.dumps(sent.json())
    assert (usage.input_tokens, usage.output_tokens) == spec["usage"]


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_each_protocol_is_asked_once_more_when_its_json_is_invalid(protocol, fake_llm, prices):
    spec = PROTOCOLS[protocol]
    fake_llm.queue(spec["invalid"](), spec["valid"](GOOD_SUMMARY))
    usage = Usage()
    assert summarize_with(spec["endpoint"](fake_llm.origin), "Customer: late parcel", usage) == GOOD_SUMMARY
    first, second = fake_llm.requests
    assert "That answer was invalid" in json.dumps(second.json())
    assert "That answer was invalid" not in json.dumps(first.json())
    assert usage.input_tokens == 2 * spec["usage"][0]  # both calls are billed


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_invalid_json_twice_is_a_summary_error(protocol, fake_llm, prices):
    spec = PROTOCOLS[protocol]
    fake_llm.queue(spec["invalid"](), spec["invalid"]())
    with pytest.raises(SummaryError, match="invalid summary twice"):
        summarize_with(spec["endpoint"](fake_llm.origin), "Customer: late parcel", Usage())
    assert len(fake_llm.requests) == 2


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_each_protocols_error_is_reported_without_the_key(protocol, fake_llm, prices):
    from backend.providers.base import ProviderError

    spec = PROTOCOLS[protocol]
    fake_llm.queue(spec["error"]())
    with pytest.raises(ProviderError) as failure:
        summarize_with(spec["endpoint"](fake_llm.origin), "text", Usage())
    assert failure.value.status in (400, 401, 404) and not failure.value.retryable
    assert KEY not in failure.value.message


def test_chat_completions_falls_back_to_json_mode_when_json_schema_is_unsupported(fake_llm, prices):
    fake_llm.queue(
        openai_structured_error(
            400, "This response_format type is unavailable now", "invalid_request_error", "response_format"
        ),
        openai_json(json.dumps(GOOD_SUMMARY)),
    )
    spec = PROTOCOLS["chat_completions"]
    assert summarize_with(spec["endpoint"](fake_llm.origin), "text", Usage()) == GOOD_SUMMARY
    fallback = fake_llm.requests[1].json()
    assert fallback["response_format"] == {"type": "json_object"}
    assert '"next_action"' in fallback["messages"][0]["content"]  # the schema travels in the instructions


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not json", "not JSON"),
        ("[]", "the answer must be of type object"),
        (json.dumps({k: v for k, v in GOOD_SUMMARY.items() if k != "language"}), "language missing"),
        (json.dumps(GOOD_SUMMARY | {"urgency": "urgent"}), "urgency must be one of low, normal, high"),
        (json.dumps(GOOD_SUMMARY | {"sentiment": "angry"}), "sentiment must be one of negative, neutral, positive"),
        (json.dumps(GOOD_SUMMARY | {"summary": ""}), "summary must have at least 1 characters"),
        (json.dumps(GOOD_SUMMARY | {"summary": "x" * 501}), "summary must have at most 500 characters"),
        (json.dumps(GOOD_SUMMARY | {"mood": "sad"}), "the answer has fields outside the schema"),
        (json.dumps(GOOD_SUMMARY | {"category": 3}), "category must be of type string"),
    ],
)
def test_a_summary_that_breaks_the_schema_is_invalid(text, problem):
    data, found = validation_problem(text)
    assert data is None and found.startswith(problem)


def test_a_valid_summary_passes():
    assert validation_problem(json.dumps(GOOD_SUMMARY)) == (GOOD_SUMMARY, "")


def make_ticket(site, **fields) -> Ticket:
    return Ticket.objects.create(site=site, source=Ticket.Source.WEBHOOK, text="My parcel is late.", **fields)


def test_a_summary_is_stored_with_its_tokens_and_cost(helpdesk, fake_llm):
    fake_llm.queue(openai_json(json.dumps(GOOD_SUMMARY | {"category": " Shipping "}), usage=(120, 40)))
    ticket = make_ticket(helpdesk)
    assert summarize_ticket(ticket.pk) == "done"
    ticket.refresh_from_db()
    assert (ticket.state, ticket.summary, ticket.category, ticket.urgency) == (
        "done",
        GOOD_SUMMARY["summary"],
        "shipping",
        "high",
    )
    assert (ticket.provider, ticket.model, ticket.input_tokens, ticket.output_tokens) == (
        "openai",
        "gpt-4o-mini",
        120,
        40,
    )
    assert ticket.cost == Decimal("0.000042")  # 120 × 0.15 + 40 × 0.60 per million
    assert ticket.attempts == 1 and ticket.lease_until is None and ticket.summarized is not None


def test_a_done_ticket_is_not_summarized_twice(helpdesk, fake_llm):
    fake_llm.queue(good_reply())
    ticket = make_ticket(helpdesk)
    assert summarize_ticket(ticket.pk) == "done"
    assert summarize_ticket(ticket.pk) == "skipped"
    assert len(fake_llm.requests) == 1


def test_a_ticket_held_by_another_worker_is_skipped_until_its_lease_runs_out(helpdesk, fake_llm):
    import datetime as dt

    from django.utils import timezone

    ticket = make_ticket(helpdesk)
    assert claim(ticket.pk) is not None
    assert claim(ticket.pk) is None  # a second worker cannot take it
    assert str(ticket.pk) not in stale_ticket_ids()
    Ticket.objects.filter(pk=ticket.pk).update(lease_until=timezone.now() - dt.timedelta(seconds=1))
    assert str(ticket.pk) in stale_ticket_ids()  # the first worker died: the sweep queues it again
    fake_llm.queue(good_reply())
    assert tasks.requeue_stale_tickets.delay().get() == 1
    ticket.refresh_from_db()
    assert ticket.state == "done" and ticket.attempts == 2


def test_a_pending_ticket_whose_message_was_lost_is_found_by_the_sweep(helpdesk, settings):
    import datetime as dt

    from django.utils import timezone

    ticket = make_ticket(helpdesk)
    assert str(ticket.pk) not in stale_ticket_ids()  # just queued: give the worker time
    old = timezone.now() - dt.timedelta(seconds=settings.TICKET_LEASE_SECONDS + 1)
    Ticket.objects.filter(pk=ticket.pk).update(updated=old)
    assert stale_ticket_ids() == [str(ticket.pk)]


def test_a_failing_provider_is_retried_then_marks_the_ticket_failed_with_the_reason(helpdesk, fake_llm):
    error = openai_structured_error(503, "The engine is currently overloaded", "server_error")
    fake_llm.queue(*[error] * (tasks.SUMMARY_RETRIES + 1))
    ticket = make_ticket(helpdesk)
    tasks.summarize_ticket.delay(str(ticket.pk))
    ticket.refresh_from_db()
    assert ticket.state == "failed"
    assert ticket.error == "openai answered 503: The engine is currently overloaded"
    assert ticket.attempts == tasks.SUMMARY_RETRIES + 1 == len(fake_llm.requests)
    assert SUMMARY_KEY not in ticket.error


def test_a_provider_that_recovers_during_the_retries_gives_a_summary(helpdesk, fake_llm):
    fake_llm.queue(openai_structured_error(500, "oops", "server_error"), good_reply())
    ticket = make_ticket(helpdesk)
    tasks.summarize_ticket.delay(str(ticket.pk))
    ticket.refresh_from_db()
    assert ticket.state == "done" and ticket.attempts == 2 and ticket.error == ""


def test_a_rejected_key_fails_the_ticket_at_once(helpdesk, fake_llm):
    fake_llm.queue(
        openai_structured_error(401, "Incorrect API key provided: sk-summ****WXYZ.", "invalid_request_error")
    )
    ticket = make_ticket(helpdesk)
    tasks.summarize_ticket.delay(str(ticket.pk))
    ticket.refresh_from_db()
    assert ticket.state == "failed" and ticket.error.startswith("openai answered 401")
    assert len(fake_llm.requests) == 1


def test_invalid_json_twice_fails_the_ticket_and_still_counts_the_tokens(helpdesk, fake_llm):
    fake_llm.queue(openai_json("nope", usage=(50, 5)), openai_json("still nope", usage=(60, 6)))
    ticket = make_ticket(helpdesk)
    assert summarize_ticket(ticket.pk) == "failed"
    ticket.refresh_from_db()
    assert ticket.state == "failed" and "invalid summary twice" in ticket.error
    assert (ticket.input_tokens, ticket.output_tokens) == (110, 11)


def test_the_next_summary_provider_in_the_chain_takes_over(fake_llm, prices):
    site = create_site(
        SiteSpec(
            name="Chain",
            origins=["https://chain.example"],
            providers=[
                ProviderSpec(kind="openai", base_url=f"{fake_llm.origin}/v1", api_key="k1-000000", purpose="summary"),
                ProviderSpec(
                    kind="mistral", base_url=f"{fake_llm.origin}/mistral", api_key="k2-000000", purpose="summary"
                ),
            ],
        )
    )
    fake_llm.queue(openai_structured_error(401, "bad key", "invalid_request_error"), good_reply())
    ticket = make_ticket(site)
    assert summarize_ticket(ticket.pk) == "done"
    assert [r.path for r in fake_llm.requests] == ["/v1/chat/completions", "/mistral/chat/completions"]
    ticket.refresh_from_db()
    assert ticket.provider == "mistral" and ticket.model == "mistral-small-latest"


def test_without_a_summary_provider_the_chat_chain_summarizes(fake_llm, prices):
    site = create_site(
        SiteSpec(
            name="ChatOnly",
            origins=["https://chat.example"],
            providers=[ProviderSpec(kind="openai", base_url=f"{fake_llm.origin}/chat", api_key="sk-chat-000000")],
        )
    )
    fake_llm.queue(good_reply())
    ticket = make_ticket(site)
    assert summarize_ticket(ticket.pk) == "done"
    assert fake_llm.requests[0].path == "/chat/chat/completions"
    assert fake_llm.requests[0].headers["authorization"] == "Bearer sk-chat-000000"


def test_each_summary_call_is_logged_for_the_sites_quota(helpdesk, fake_llm):
    import datetime as dt

    from django.utils import timezone

    from backend.tickets.models import SummaryCall
    from backend.tickets.services import summary_usage

    before = timezone.now() - dt.timedelta(seconds=1)
    fake_llm.queue(openai_json("nope", usage=(50, 5)), openai_json(json.dumps(GOOD_SUMMARY), usage=(70, 30)))
    ticket = make_ticket(helpdesk)
    assert summarize_ticket(ticket.pk) == "done"
    calls = list(SummaryCall.objects.filter(site=helpdesk).order_by("id").values_list("input_tokens", "output_tokens"))
    assert calls == [(50, 5), (70, 30)]
    assert summary_usage(helpdesk.pk, before) == {
        "input_tokens": 120,
        "output_tokens": 35,
        "cost": Decimal("0.000040"),  # 0.0000105 + 0.0000285, each call rounded to the micro-dollar
    }
    assert summary_usage(helpdesk.pk, timezone.now() + dt.timedelta(seconds=1)) == {
        "input_tokens": 0,
        "output_tokens": 0,
        "cost": 0,
    }


def test_an_invalid_summary_keeps_the_customers_words_out_of_the_logs(helpdesk, fake_llm, caplog):
    leaked = GOOD_SUMMARY | {"urgency": "my card 4111 1111 1111 1111 was charged twice"}
    fake_llm.queue(openai_json(json.dumps(leaked)), openai_json(json.dumps(leaked)))
    ticket = make_ticket(helpdesk, subject="Charged twice")
    with caplog.at_level("DEBUG"):
        assert summarize_ticket(ticket.pk) == "failed"
    assert "4111" not in caplog.text and "My parcel is late" not in caplog.text
    assert "invalid" in caplog.text

"""Summarize a ticket with the site's summary model, as JSON validated against one schema."""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import jsonschema
from asgiref.sync import async_to_sync
from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from backend.providers.base import ChatMessage, Endpoint, ProviderError
from backend.providers.models import ProviderConfig
from backend.providers.pricing import ZERO, cost_of
from backend.providers.structured import StructuredRequest, complete_json
from backend.sites.models import Site
from backend.tickets.models import SummaryCall, Ticket

logger = logging.getLogger(__name__)

# What the provider is asked for. Kept to the subset every JSON mode accepts (OpenAI strict mode wants every
# property required and no extra ones).
SUMMARY_SCHEMA: dict = {
    "type": "object",
    "properties": {
        "summary": {"type": "string", "description": "The ticket in one sentence."},
        "category": {"type": "string", "description": "A short topic such as billing, shipping, bug, account."},
        "sentiment": {"type": "string", "enum": ["negative", "neutral", "positive"]},
        "urgency": {"type": "string", "enum": ["low", "normal", "high"]},
        "language": {"type": "string", "description": "The customer's language as an ISO 639-1 code, such as en."},
        "next_action": {"type": "string", "description": "What the support team should do next, in one sentence."},
    },
    "required": ["summary", "category", "sentiment", "urgency", "language", "next_action"],
    "additionalProperties": False,
}

# What is stored: the same schema, with bounds that fit the ticket's columns.
_LIMITS = {"summary": 500, "category": 100, "language": 50, "next_action": 1000}
STORED_SCHEMA: dict = copy.deepcopy(SUMMARY_SCHEMA)
for _name, _limit in _LIMITS.items():
    STORED_SCHEMA["properties"][_name].update({"minLength": 1, "maxLength": _limit})
_VALIDATOR = jsonschema.Draft202012Validator(STORED_SCHEMA)

SYSTEM_PROMPT = (
    "You summarize customer support tickets for a support team. Read the ticket and answer with one JSON "
    "object: summary (one sentence), category (one or two lowercase words), sentiment of the customer, "
    "urgency, language (ISO 639-1 code of the customer's language) and next_action (one sentence). "
    "Write summary and next_action in English."
)
TRANSCRIPT_LIMIT = 24_000  # characters of the ticket sent to the model; the newest part is kept
MAX_SUMMARY_TOKENS = 600

ROLE_LABELS = {"customer": "Customer", "agent": "Agent", "assistant": "Assistant (AI)"}


class SummaryError(Exception):
    """A summary that could not be made; retryable when a later attempt may succeed."""

    def __init__(self, message: str, *, retryable: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.usage: Usage | None = None  # what the failed calls still cost


@dataclass
class Usage:
    provider: str = ""
    model: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = ZERO
    calls: list[SummaryCall] = field(default_factory=list)

    def add(self, endpoint: Endpoint, input_tokens: int, output_tokens: int) -> None:
        cost = cost_of(endpoint.kind, endpoint.model, input_tokens, output_tokens)
        self.provider, self.model = endpoint.kind, endpoint.model
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.cost += cost
        self.calls.append(
            SummaryCall(
                provider=endpoint.kind,
                model=endpoint.model,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost=cost,
            )
        )


@dataclass
class Summary:
    data: dict
    usage: Usage = field(default_factory=Usage)


def summary_endpoints(site: Site) -> list[Endpoint]:
    """Return the site's summary chain, or its chat chain when it has no summary provider."""
    configs = ProviderConfig.objects.filter(site=site, enabled=True).order_by("position", "id")
    chain = [c.endpoint() for c in configs if c.purpose == ProviderConfig.Purpose.SUMMARY]
    return chain or [c.endpoint() for c in configs if c.purpose == ProviderConfig.Purpose.CHAT]


def transcript(ticket: Ticket) -> str:
    """Render the ticket as plain text for the model, keeping the newest part within the limit."""
    lines = [f"Subject: {ticket.subject}"] if ticket.subject else []
    for item in ticket.messages or []:
        label = ROLE_LABELS.get(item.get("role", ""), "Customer")
        if item.get("author"):
            label = f"{label} ({item['author']})"
        lines.append(f"{label}: {item.get('text', '')}")
    if ticket.text:
        lines.append(ticket.text)
    text = "\n\n".join(lines)
    return text if len(text) <= TRANSCRIPT_LIMIT else "[…]" + text[-TRANSCRIPT_LIMIT:]


def _describe(error: jsonschema.ValidationError) -> str:
    """Say what is wrong without quoting the value: it may hold the customer's words, which stay out of logs."""
    where = "/".join(str(p) for p in error.absolute_path) or "the answer"
    rule, expected = error.validator, error.validator_value
    if rule == "required":
        missing = [name for name in expected if isinstance(error.instance, dict) and name not in error.instance]
        return f"{', '.join(missing) or 'a field'} missing"
    if rule == "enum":
        return f"{where} must be one of {', '.join(map(str, expected))}"
    if rule == "type":
        return f"{where} must be of type {expected}"
    if rule in ("minLength", "maxLength"):
        return f"{where} must have {'at least' if rule == 'minLength' else 'at most'} {expected} characters"
    if rule == "additionalProperties":
        return f"{where} has fields outside the schema"
    return f"{where} fails {rule}"


def validation_problem(text: str) -> tuple[dict | None, str]:
    """Parse and validate a summary; return (data, "") or (None, what is wrong)."""
    try:
        data = json.loads(text)
    except ValueError as error:
        return None, f"not JSON ({getattr(error, 'msg', 'unreadable')})"
    error = jsonschema.exceptions.best_match(_VALIDATOR.iter_errors(data))
    if error is not None:
        return None, _describe(error)
    return data, ""


def summarize_with(
    endpoint: Endpoint, text: str, usage: Usage, site_id: int | None = None, conversation_id: Any = None
) -> dict:
    """Ask one endpoint for the summary, asking once more when its JSON does not fit the schema."""
    messages = [ChatMessage("user", f"The ticket:\n\n{text}")]
    problem = ""
    for attempt in range(2):
        request = StructuredRequest(SYSTEM_PROMPT, messages, SUMMARY_SCHEMA, MAX_SUMMARY_TOKENS, "ticket_summary")
        if site_id is None:
            reply = async_to_sync(complete_json)(endpoint, request)
        else:
            reply = _metered_call(site_id, endpoint, request, conversation_id)
        usage.add(endpoint, reply.input_tokens, reply.output_tokens)
        data, problem = validation_problem(reply.text)
        if data is not None:
            return data
        # Not the problem itself: it may quote the customer's words, which stay out of logs.
        logger.warning("summary from %s/%s is invalid (attempt %s)", endpoint.kind, endpoint.model, attempt + 1)
        messages = [
            *messages,
            ChatMessage("assistant", reply.text[:4000] or "(empty)"),
            ChatMessage("user", f"That answer was invalid ({problem}). Answer again with only the JSON object."),
        ]
    raise SummaryError(f"{endpoint.kind} returned an invalid summary twice: {problem}")


def _metered_call(site_id: int, endpoint: Endpoint, request: StructuredRequest, conversation_id: Any = None):
    """Call the provider within the site's quota (docs/quotas.md); a refusal fails the summary, no call made."""
    from backend.quotas.metered import QuotaRefused, complete_json_metered

    try:
        return complete_json_metered(site_id, endpoint, request, conversation_id=conversation_id)
    except QuotaRefused as refused:
        raise SummaryError(f"quota: {refused}; no summary was requested (retry it once the cap allows)") from None


def summarize_text(site: Site, text: str, conversation_id: Any = None) -> Summary:
    """Summarize through the site's chain: the first provider that answers with a valid summary wins.

    The calls' usage rows carry `conversation_id` (a ticket made from a conversation), so the usage page
    counts summaries in what each conversation cost.
    """
    endpoints = summary_endpoints(site)
    if not endpoints:
        raise SummaryError("the site has no summary or chat provider")
    usage = Usage()
    last: SummaryError | None = None
    for endpoint in endpoints:
        try:
            return Summary(summarize_with(endpoint, text, usage, site.pk, conversation_id), usage)
        except ProviderError as error:
            last = SummaryError(error.message, retryable=error.retryable, retry_after=error.retry_after)
        except SummaryError as error:
            last = error
        logger.warning("summary provider %s failed: %s", endpoint.kind, last.message)
    assert last is not None
    last.usage = usage
    raise last


def claim(ticket_id: object) -> Ticket | None:
    """Take the ticket for this worker until its lease ends; None when it is done or someone holds it."""
    now = timezone.now()
    lease = now + dt.timedelta(seconds=settings.TICKET_LEASE_SECONDS)
    claimed = (
        Ticket.objects.filter(pk=ticket_id, state=Ticket.State.PENDING)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .update(lease_until=lease, attempts=F("attempts") + 1)
    )
    if not claimed:
        return None
    return Ticket.objects.select_related("site").get(pk=ticket_id)


def _record(ticket: Ticket, usage: Usage) -> None:
    """Log each call for the site's quota and add the usage to the ticket."""
    for call in usage.calls:
        call.site_id, call.ticket_id = ticket.site_id, ticket.pk
    SummaryCall.objects.bulk_create(usage.calls)
    Ticket.objects.filter(pk=ticket.pk).update(**_charge(usage))


def _charge(usage: Usage) -> dict:
    """Return the update that adds a call's usage to the ticket (summary usage counts against quotas)."""
    fields: dict = {
        "input_tokens": F("input_tokens") + usage.input_tokens,
        "output_tokens": F("output_tokens") + usage.output_tokens,
        "cost": F("cost") + usage.cost,
    }
    if usage.provider:
        fields.update(provider=usage.provider, model=usage.model)
    return fields


def summarize_ticket(ticket_id: object, *, final: bool = True) -> str:
    """Summarize a pending ticket once; return "done", "failed", "stale" or "skipped".

    When a retryable provider failure happens and this is not the final attempt, the lease is released and
    SummaryError is raised so that the caller (the Celery task) retries later.
    """
    ticket = claim(ticket_id)
    if ticket is None:
        return "skipped"
    current = Ticket.objects.filter(pk=ticket.pk, version=ticket.version, state=Ticket.State.PENDING)
    try:
        result = summarize_text(ticket.site, transcript(ticket), conversation_id=ticket.conversation_id)
    except SummaryError as error:
        usage = error.usage or Usage()
        if error.retryable and not final:
            _record(ticket, usage)
            current.update(lease_until=None, error=error.message[:500])
            raise
        _record(ticket, usage)
        failed = current.update(
            state=Ticket.State.FAILED, error=error.message[:500], lease_until=None, callback_due=_callback_due(ticket)
        )
        if failed:
            logger.info("ticket %s failed: %s", ticket.pk, error.message)
            _after_result(ticket, Ticket.State.FAILED)
            return "failed"
        return "stale"
    _record(ticket, result.usage)
    data = result.data
    stored = current.update(
        state=Ticket.State.DONE,
        lease_until=None,
        error="",
        summary=data["summary"],
        category=data["category"].strip().lower()[:100],
        sentiment=data["sentiment"],
        urgency=data["urgency"],
        language=data["language"],
        next_action=data["next_action"],
        summarized=timezone.now(),
        callback_due=_callback_due(ticket),
    )
    if not stored:
        # The content changed while the model was reading it; the newer version is summarized instead.
        return "stale"
    _after_result(ticket, Ticket.State.DONE)
    return "done"


def _callback_due(ticket: Ticket) -> dt.datetime | None:
    return timezone.now() if ticket.callback_url else None


def _after_result(ticket: Ticket, state: str) -> None:
    if ticket.conversation_id is not None:
        from backend.agents import events

        events.send_sync(events.ticket_events(ticket.conversation_id, state))
    if ticket.callback_url:
        from backend.tickets.services import enqueue_callback

        enqueue_callback(ticket.pk)

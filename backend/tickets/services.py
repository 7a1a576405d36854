"""Tickets from conversations, queueing work for the Celery worker, and recovering lost work."""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.db import transaction
from django.db.models import Q, Sum
from django.utils import timezone

from backend.chat.models import Conversation, Message
from backend.tickets.intake import reopen
from backend.tickets.models import SummaryCall, Ticket
from backend.tickets.summarizer import summarize_ticket

logger = logging.getLogger(__name__)

CONVERSATION_ROLES = {Message.Role.USER: "customer", Message.Role.AGENT: "agent", Message.Role.ASSISTANT: "assistant"}


def _enqueue(task_name: str, *args: object) -> None:
    """Send a task once the current transaction commits; a broker outage leaves the row for the sweep."""

    def send() -> None:
        from backend.tickets import tasks

        try:
            getattr(tasks, task_name).delay(*args)
        except Exception:  # noqa: BLE001 - the ticket stays pending and requeue_stale_tickets sends it later
            logger.exception("could not queue %s for %s", task_name, args)

    transaction.on_commit(send)


def enqueue_summary(ticket_id: object) -> None:
    _enqueue("summarize_ticket", str(ticket_id))


def enqueue_callback(ticket_id: object) -> None:
    _enqueue("deliver_callback", str(ticket_id))


def conversation_messages(conversation: Conversation) -> list[dict]:
    """Return the conversation's messages in the ticket's shape (customer, agent, assistant)."""
    rows = conversation.messages.filter(role__in=list(CONVERSATION_ROLES)).exclude(text="").order_by("created")
    return [
        {
            "role": CONVERSATION_ROLES[m.role],
            **({"author": m.author} if m.author else {}),
            "text": m.text,
            "at": m.created.isoformat(),
        }
        for m in rows
    ]


def open_conversation_ticket(conversation_id: object, reason: str) -> Ticket | None:
    """Create or refresh the conversation's one ticket; it is pending when its messages need a summary."""
    conversation = Conversation.objects.select_related("site").filter(pk=conversation_id).first()
    if conversation is None:
        return None
    messages = conversation_messages(conversation)
    with transaction.atomic():
        ticket, created = Ticket.objects.select_for_update().get_or_create(
            conversation=conversation,
            defaults={
                "site": conversation.site,
                "source": Ticket.Source.CONVERSATION,
                "reason": reason[:20],
                "messages": messages,
            },
        )
        if not created and (ticket.messages != messages or ticket.state == Ticket.State.FAILED):
            ticket.messages = messages
            ticket.reason = reason[:20]
            reopen(ticket)
            ticket.save()
    return ticket


def summarize_conversation(conversation_id: object, reason: str) -> Ticket | None:
    """Create or update the conversation's ticket and summarize it now (the task and tests call this)."""
    ticket = open_conversation_ticket(conversation_id, reason)
    if ticket is None:
        return None
    if ticket.state == Ticket.State.PENDING:
        summarize_ticket(ticket.pk)
    ticket.refresh_from_db()
    return ticket


def queue_conversation_summary(conversation_id: object, reason: str) -> None:
    """Summarize a conversation in the worker: call on handoff, on close, or when an agent asks."""
    _enqueue("summarize_conversation", str(conversation_id), reason)


def retry_ticket(ticket: Ticket) -> None:
    """Summarize a ticket again from scratch (the admin's retry)."""
    with transaction.atomic():
        ticket = Ticket.objects.select_for_update().get(pk=ticket.pk)
        reopen(ticket)
        ticket.save()
        enqueue_summary(ticket.pk)


def stale_ticket_ids() -> list[str]:
    """Return pending tickets nobody is working on: a lease ran out, or a queued message was lost."""
    now = timezone.now()
    forgotten = now - dt.timedelta(seconds=settings.TICKET_LEASE_SECONDS)
    rows = Ticket.objects.filter(state=Ticket.State.PENDING).filter(
        Q(lease_until__lt=now) | Q(lease_until__isnull=True, updated__lt=forgotten)
    )
    return [str(pk) for pk in rows.values_list("pk", flat=True)[:1000]]


def summary_usage(site_id: int, since: dt.datetime) -> dict:
    """Return the site's summary tokens and cost since a moment, for quotas: {input_tokens, output_tokens, cost}."""
    totals = SummaryCall.objects.filter(site_id=site_id, created__gte=since).aggregate(
        input_tokens=Sum("input_tokens"), output_tokens=Sum("output_tokens"), cost=Sum("cost")
    )
    return {name: value or 0 for name, value in totals.items()}

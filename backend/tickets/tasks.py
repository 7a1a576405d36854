"""Celery tasks: each takes ids and calls a plain function that the tests call directly."""

from __future__ import annotations

import random

from celery import shared_task
from celery.signals import worker_ready

from backend.tickets import callbacks, services, summarizer

SUMMARY_RETRIES = 3
# Redis redelivers a message not acknowledged within its visibility timeout (an hour by default), so no
# retry waits longer than this in the queue; a later callback is sent by the sweep once it is due.
MAX_COUNTDOWN = 50 * 60


def provider_backoff(retries: int, retry_after: float | None) -> float:
    """Wait 15 s, 30 s, 60 s… (with jitter) before retrying a failed provider, or what it asked for."""
    wait = 15 * 2**retries * random.uniform(0.8, 1.2)
    return max(wait, retry_after or 0)


@shared_task(bind=True, acks_late=True, max_retries=SUMMARY_RETRIES)
def summarize_ticket(self, ticket_id: str) -> str:
    try:
        return summarizer.summarize_ticket(ticket_id, final=self.request.retries >= self.max_retries)
    except summarizer.SummaryError as error:
        raise self.retry(countdown=provider_backoff(self.request.retries, error.retry_after)) from None


@shared_task(acks_late=True)
def summarize_conversation(conversation_id: str, reason: str) -> None:
    ticket = services.open_conversation_ticket(conversation_id, reason)
    if ticket is not None and ticket.state == ticket.State.PENDING:
        summarize_ticket.delay(str(ticket.pk))


@shared_task(bind=True, acks_late=True, max_retries=None)
def deliver_callback(self, ticket_id: str) -> None:
    wait = callbacks.deliver(ticket_id)
    if wait is not None and wait <= MAX_COUNTDOWN:
        raise self.retry(countdown=wait)


@shared_task(acks_late=True)
def requeue_stale_tickets() -> int:
    summaries = services.stale_ticket_ids()
    for ticket_id in summaries:
        summarize_ticket.delay(ticket_id)
    deliveries = callbacks.overdue_callback_ticket_ids()
    for ticket_id in deliveries:
        deliver_callback.delay(ticket_id)
    return len(summaries) + len(deliveries)


@worker_ready.connect
def _recover_on_start(sender=None, **kwargs) -> None:
    # A worker killed mid-task may have lost its message (the filesystem queue keeps none in flight).
    requeue_stale_tickets.delay()

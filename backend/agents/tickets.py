"""The seam to the tickets app: conversations become tickets on handoff, contact, close and "Summarize".

Each trigger queues `backend.tickets.tasks.summarize_conversation` (after the current transaction commits);
the ticket app keeps one ticket per conversation and summarizes it only when its messages changed.
"""

from __future__ import annotations

import logging
from typing import Any

from django.http import HttpRequest
from django.template.loader import render_to_string
from django.utils.safestring import SafeString

from backend.chat.models import Conversation, Message

log = logging.getLogger(__name__)

# Ticket.reason values (at most 20 characters).
HANDOFF, CONTACT, CLOSE, MANUAL = "handoff", "contact", "close", "manual"


def queue_summary(conversation_id: Any, reason: str) -> None:
    """Queue the conversation's ticket summary once the visitor has written something.

    A broken broker never breaks the agent's or the visitor's action.
    """
    from backend.tickets.services import queue_conversation_summary

    if not Message.objects.filter(conversation_id=conversation_id, role=Message.Role.USER).exclude(text="").exists():
        return  # nothing the visitor said yet: no ticket to keep (a later trigger makes it)
    try:
        queue_conversation_summary(conversation_id, reason)
    except Exception:  # noqa: BLE001 - the requeue sweep and the "Summarize" button can still make the ticket
        log.exception("could not queue the summary of conversation %s (%s)", conversation_id, reason)


def conversation_ticket(conversation: Conversation) -> Any:
    from backend.tickets.models import Ticket

    return Ticket.objects.filter(conversation=conversation).first()


def render_summary_panel(request: HttpRequest, conversation: Conversation) -> SafeString | str:
    """Show the conversation's ticket summary, and a "Summarize" button to agents who may change it."""
    if not request.user.has_perm("tickets.view_ticket"):
        return ""
    context = {
        "ticket": conversation_ticket(conversation),
        "can_summarize": request.user.has_perm("chat.change_conversation"),
        "request": request,
    }
    return render_to_string("agents/summary_panel.html", context, request=request)


def summarize_action(request: HttpRequest, conversation: Conversation) -> str:
    """Handle the conversation page's "Summarize" button; return the message shown to the agent."""
    queue_summary(conversation.pk, MANUAL)
    return "Summary requested: it appears here when the summary model has answered."

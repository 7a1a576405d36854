"""Transcripts as JSON and CSV, and the privacy deletion of a visitor with everything linked to them."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

from django.db import transaction

from backend.chat.models import Conversation, Message, Visitor

CSV_COLUMNS = [
    "conversation",
    "site",
    "created",
    "role",
    "author",
    "text",
    "status",
    "provider",
    "model",
    "input_tokens",
    "output_tokens",
    "cost",
    "feedback",
]
# Spreadsheets run cells that start with these as formulas (CSV injection); a leading quote disarms them.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def message_dict(message: Message) -> dict:
    return {
        "id": str(message.id),
        "created": message.created.isoformat(),
        "role": message.role,
        "author": message.author,
        "text": message.text,
        "status": message.status,
        "provider": message.provider,
        "model": message.model,
        "input_tokens": message.input_tokens,
        "output_tokens": message.output_tokens,
        "cost": str(message.cost),
        "feedback": message.feedback,
    }


def transcript(conversation: Conversation) -> dict:
    """Return one conversation with its visitor and every message, oldest first."""
    visitor = conversation.visitor
    return {
        "id": str(conversation.pk),
        "site": conversation.site.name,
        "state": conversation.state,
        "created": conversation.created.isoformat(),
        "visitor": {"name": visitor.name, "email": visitor.email, "email_verified": visitor.email_verified},
        "messages": [message_dict(m) for m in conversation.messages.order_by("created")],
    }


def transcripts(conversations: Iterable[Conversation]) -> dict:
    return {"conversations": [transcript(c) for c in conversations]}


def safe_cell(value: object) -> object:
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def transcripts_csv(conversations: Iterable[Conversation]) -> str:
    """Return one CSV row per message, with cells that a spreadsheet cannot run as formulas."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for conversation in conversations:
        for message in conversation.messages.order_by("created"):
            row = message_dict(message) | {"conversation": str(conversation.pk), "site": conversation.site.name}
            writer.writerow([safe_cell("" if row[c] is None else row[c]) for c in CSV_COLUMNS])
    return out.getvalue()


def delete_visitors(visitor_ids: Iterable[int]) -> dict[str, int]:
    """Delete visitors with their conversations and messages (a privacy request); return counts by model."""
    with transaction.atomic():
        _, counts = Visitor.objects.filter(pk__in=list(visitor_ids)).delete()
    return {label.rsplit(".", 1)[-1].lower(): n for label, n in counts.items()}

"""Tickets that helpdesks POST: validate the body, then create or update the ticket exactly once."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from dataclasses import dataclass
from urllib.parse import urlsplit

import jsonschema
from django.conf import settings
from django.db import IntegrityError, transaction

from backend.sites.models import Site
from backend.tickets.models import Ticket, WebhookReceipt

MAX_BODY_BYTES = 1024 * 1024
MAX_CALLBACK_URL = 2000

TICKET_BODY_SCHEMA: dict = {
    "type": "object",
    "properties": {
        "external_id": {"type": "string", "minLength": 1, "maxLength": 200},
        "subject": {"type": "string", "maxLength": 500},
        "messages": {
            "type": "array",
            "minItems": 1,
            "maxItems": 5000,
            "items": {
                "type": "object",
                "properties": {
                    "role": {"enum": ["customer", "agent"]},
                    "author": {"type": "string", "maxLength": 200},
                    "text": {"type": "string", "minLength": 1},
                    "at": {"type": "string", "maxLength": 64},
                },
                "required": ["role", "text"],
                "additionalProperties": False,
            },
        },
        "text": {"type": "string", "minLength": 1},
        "callback_url": {"type": "string", "maxLength": MAX_CALLBACK_URL},
    },
    "additionalProperties": False,
}
_VALIDATOR = jsonschema.Draft202012Validator(TICKET_BODY_SCHEMA)


@dataclass
class BodyError(Exception):
    """A ticket body the API refuses, naming the field at fault."""

    field: str
    message: str
    code: str = "invalid_field"

    def as_json(self) -> dict:
        return {"error": self.code, "field": self.field, "message": self.message}


def _field_name(path: list) -> str:
    name = ""
    for part in path:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "body"


def _schema_error(error: jsonschema.ValidationError) -> BodyError:
    path = list(error.absolute_path)
    if error.validator == "required":
        missing = next(p for p in error.validator_value if p not in error.instance)
        return BodyError(_field_name([*path, missing]), f"{missing} is required")
    if error.validator == "additionalProperties":
        known = set(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - known)[0]
        return BodyError(_field_name([*path, extra]), f"{extra} is not a known field")
    return BodyError(_field_name(path), error.message[:300])


def callback_url_problem(url: str) -> str:
    """Return why a callback URL cannot be used, or "" (addresses are checked again when sending)."""
    if len(url) > MAX_CALLBACK_URL:
        return f"must be at most {MAX_CALLBACK_URL} characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    if parts.username is not None or parts.password is not None:
        return "must not contain credentials"
    if not settings.WEBHOOK_ALLOW_PRIVATE_CALLBACKS:
        try:
            address = ipaddress.ip_address(parts.hostname)
        except ValueError:
            return ""
        if not address.is_global or address.is_multicast:
            return "must not point to a private, loopback or link-local address"
    return ""


def parse_body(raw: bytes) -> dict:
    """Parse and validate a ticket body; raise BodyError naming the field at fault."""
    try:
        data = json.loads(raw)
    except ValueError as error:
        raise BodyError("body", f"the body is not valid JSON: {getattr(error, 'msg', error)}", "invalid_json") from None
    error = jsonschema.exceptions.best_match(_VALIDATOR.iter_errors(data))
    if error is not None:
        raise _schema_error(error)
    if ("messages" in data) == ("text" in data):
        raise BodyError("messages", "send either messages (a list) or text (a string), exactly one of them")
    for index, message in enumerate(data.get("messages", [])):
        if "at" in message:
            try:
                dt.datetime.fromisoformat(message["at"].replace("Z", "+00:00"))
            except ValueError:
                raise BodyError(f"messages[{index}].at", "must be an ISO 8601 date and time") from None
    if "callback_url" in data and (problem := callback_url_problem(data["callback_url"])):
        raise BodyError("callback_url", problem)
    return data


def receive(site: Site, webhook_id: str, data: dict) -> tuple[Ticket, bool]:
    """Create or update the ticket for a verified delivery; return (ticket, whether it needs a summary).

    The same webhook-id returns its ticket unchanged; the same external_id with new content updates it.
    """
    for _ in range(2):
        try:
            return _receive_once(site, webhook_id, data)
        except IntegrityError:
            # A concurrent delivery of the same webhook-id or external_id won; the next pass finds its row.
            continue
    return _receive_once(site, webhook_id, data)


def _receive_once(site: Site, webhook_id: str, data: dict) -> tuple[Ticket, bool]:
    content = {
        "subject": data.get("subject", ""),
        "messages": data.get("messages", []),
        "text": data.get("text", ""),
    }
    external_id = data.get("external_id")
    with transaction.atomic():
        receipt = WebhookReceipt.objects.filter(site=site, webhook_id=webhook_id).select_related("ticket").first()
        if receipt is not None:
            return receipt.ticket, False
        ticket = None
        if external_id:
            ticket = Ticket.objects.select_for_update().filter(site=site, external_id=external_id).first()
        if ticket is None:
            ticket = Ticket.objects.create(
                site=site,
                source=Ticket.Source.WEBHOOK,
                external_id=external_id,
                webhook_id=webhook_id,
                callback_url=data.get("callback_url", ""),
                **content,
            )
            changed = True
        else:
            changed = any(getattr(ticket, name) != value for name, value in content.items())
            ticket.callback_url = data.get("callback_url", ticket.callback_url)
            if changed:
                for name, value in content.items():
                    setattr(ticket, name, value)
                reopen(ticket)
            ticket.save()
        WebhookReceipt.objects.create(site=site, webhook_id=webhook_id, ticket=ticket)
    return ticket, changed


def reopen(ticket: Ticket) -> None:
    """Mark a ticket's content as new: pending again, its old summary and any worker's lease dropped."""
    ticket.version += 1
    ticket.state = Ticket.State.PENDING
    ticket.lease_until = None
    ticket.callback_due = None
    ticket.attempts = 0
    ticket.error = ""
    for name in ("summary", "category", "sentiment", "urgency", "language", "next_action"):
        setattr(ticket, name, "")
    ticket.summarized = None

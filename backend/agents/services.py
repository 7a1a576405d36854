"""State changes of conversations (takeover, handoff, close) and visitor identity, as plain functions."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.utils import timezone

from backend.agents.access import display_name
from backend.chat.models import Conversation, Message, Visitor
from backend.sites.models import Site

State = Conversation.State
MAX_NAME_LENGTH = 200
MAX_EMAIL_LENGTH = 254  # Visitor.email's column, and the longest address SMTP allows


def _change_state(conversation_id: Any, *, unless: list[str], **fields: Any) -> Conversation | None:
    """Set fields with one conditional UPDATE; return the fresh row when it changed, else None."""
    changed = Conversation.objects.filter(pk=conversation_id).exclude(state__in=unless).update(**fields)
    if not changed:
        return None
    return Conversation.objects.get(pk=conversation_id)


def take_over(conversation_id: Any, user: Any) -> Conversation | None:
    return _change_state(
        conversation_id, unless=[State.AGENT], state=State.AGENT, assigned_agent=user, waiting_since=None
    )


def hand_back(conversation_id: Any) -> Conversation | None:
    return _change_state(conversation_id, unless=[State.BOT], state=State.BOT, assigned_agent=None, waiting_since=None)


def close(conversation_id: Any) -> Conversation | None:
    return _change_state(conversation_id, unless=[State.CLOSED], state=State.CLOSED, waiting_since=None)


def request_handoff(conversation_id: Any) -> Conversation | None:
    """Put the conversation in the agents' queue, unless an agent has it or it already waits."""
    return _change_state(
        conversation_id, unless=[State.AGENT, State.WAITING], state=State.WAITING, waiting_since=timezone.now()
    )


def reopen(conversation_id: Any) -> Conversation | None:
    """Give a closed conversation back to the bot when its visitor writes again."""
    changed = Conversation.objects.filter(pk=conversation_id, state=State.CLOSED).update(state=State.BOT)
    return Conversation.objects.get(pk=conversation_id) if changed else None


def touch(conversation_id: Any) -> None:
    """Mark the conversation active (bot replies do this for the bot's turns)."""
    Conversation.objects.filter(pk=conversation_id).update(last_activity=timezone.now())


def current_state(conversation_id: Any) -> str | None:
    """Read the state from the database: another process (an agent's page) may have changed it."""
    return Conversation.objects.filter(pk=conversation_id).values_list("state", flat=True).first()


def agent_reply(conversation_id: Any, user: Any, text: str) -> tuple[Message, Conversation | None]:
    """Store an agent's message and take the conversation over; return (message, conversation if its state changed)."""
    with transaction.atomic():
        conversation = Conversation.objects.get(pk=conversation_id)
        message = Message.objects.create(
            conversation=conversation, role=Message.Role.AGENT, text=text, author=display_name(user)
        )
        Conversation.objects.filter(pk=conversation_id).update(last_activity=timezone.now())
        changed = take_over(conversation_id, user)
    return message, changed


def set_feedback(conversation_id: Any, message_id: Any, value: int) -> bool:
    """Rate an assistant reply of this conversation only; return False when there is no such reply."""
    return bool(
        Message.objects.filter(pk=message_id, conversation_id=conversation_id, role=Message.Role.ASSISTANT).update(
            feedback=value
        )
    )


def clean_email(value: Any) -> str:
    """Return a valid email address or raise ValueError."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("missing email")
    email = value.strip()
    if len(email) > MAX_EMAIL_LENGTH:
        raise ValueError("email too long")
    try:
        validate_email(email)
    except ValidationError:
        raise ValueError("invalid email") from None
    return email


def identity_hash(secret: str, email: str) -> str:
    """Return the hex HMAC-SHA256 of the email keyed with the site's identity secret (what the site computes)."""
    return hmac.new(secret.encode(), email.encode(), hashlib.sha256).hexdigest()


def email_is_proven(site: Site, email: str, given_hash: Any) -> bool:
    if not site.identity_secret or not isinstance(given_hash, str):
        return False
    return hmac.compare_digest(identity_hash(site.identity_secret, email), given_hash.strip().lower())


def identify(visitor_id: int, site: Site, email: str | None, name: str | None, given_hash: Any) -> bool:
    """Store what the site tells about its visitor; return whether the email is verified."""
    fields: dict[str, Any] = {}
    verified = False
    if email is not None:
        verified = email_is_proven(site, email, given_hash)
        fields |= {"email": email, "email_verified": verified}
    if name is not None:
        fields["name"] = name
    Visitor.objects.filter(pk=visitor_id).update(**fields)
    return verified


def leave_contact(conversation_id: Any, visitor_id: int, email: str) -> Conversation | None:
    """Store the email a waiting visitor left, and keep the conversation queued as a ticket."""
    visitor = Visitor.objects.get(pk=visitor_id)
    # A verified email stays verified only when the visitor repeats it.
    verified = visitor.email_verified and visitor.email.lower() == email.lower()
    Visitor.objects.filter(pk=visitor_id).update(email=email, email_verified=verified)
    now = timezone.now()
    Conversation.objects.filter(pk=conversation_id).update(contact_left_at=now, last_activity=now)
    return _change_state(conversation_id, unless=[State.AGENT, State.WAITING], state=State.WAITING, waiting_since=now)

"""What a log line is about: the request id, site and conversation of the work in progress."""

from __future__ import annotations

import contextvars
import logging
import re
import uuid

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
site: contextvars.ContextVar[str | None] = contextvars.ContextVar("site", default=None)
conversation: contextvars.ContextVar[str | None] = contextvars.ContextVar("conversation", default=None)

# A request id a proxy passes in is kept only when it cannot carry anything but an id.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


def new_request_id(offered: str | None = None) -> str:
    """Return the offered id when it is safe to echo and log, else a fresh random one."""
    if offered and _SAFE_ID.match(offered):
        return offered
    return uuid.uuid4().hex


def bind(*, request: str | None = None, site_key: str | None = None, conversation_id: object = None) -> None:
    """Set the ids that this task's (and its child tasks') log lines carry."""
    if request is not None:
        request_id.set(request)
    if site_key is not None:
        site.set(site_key)
    if conversation_id is not None:
        conversation.set(str(conversation_id))


# Personal data that must never reach a log line, whatever a caller formats into it.
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_SECRET = re.compile(r"\b(?:sk|pk|rk|key)-[A-Za-z0-9_-]{6,}")
_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+")


def redact(text: str) -> str:
    text = _EMAIL.sub("[email]", text)
    text = _SECRET.sub("[secret]", text)
    return _BEARER.sub("Bearer [secret]", text)


class ContextFilter(logging.Filter):
    """Add request_id, site and conversation to every record, and redact e-mails and keys from it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        record.site = site.get()
        record.conversation = conversation.get()
        record.msg, record.args = redact(record.getMessage()), None
        return True

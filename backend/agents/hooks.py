"""Extension points of the conversation page, for features that live in other apps (e.g. ticket summaries)."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest
from django.utils.safestring import SafeString

from backend.chat.models import Conversation

# A panel renders extra HTML (for instance a "Summarize" form) below the transcript; return "" to show nothing.
# The tickets app registers one with `CONVERSATION_PANELS.append(render_summary_panel)` in its AppConfig.ready.
Panel = Callable[[HttpRequest, Conversation], SafeString | str]
CONVERSATION_PANELS: list[Panel] = []


def conversation_panels(request: HttpRequest, conversation: Conversation) -> list[SafeString | str]:
    return [html for html in (panel(request, conversation) for panel in CONVERSATION_PANELS) if html]


# Buttons of the panels: a POST with `action=<name>` on the conversation page calls CONVERSATION_ACTIONS[name]
# (for agents who may change the conversation), which returns the message shown to the agent.
Action = Callable[[HttpRequest, Conversation], str]
CONVERSATION_ACTIONS: dict[str, Action] = {}

"""Put a site's best help passages into the prompt, and name them as the reply's sources."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.conf import settings

from backend.kb.retrieval import retrieve
from backend.kb.search import Hit
from backend.providers.base import ChatMessage, Endpoint, StreamEnd

INSTRUCTIONS = (
    "Answer the visitor's question using only the help-centre passages below. "
    "If the passages do not contain the answer, say plainly that you do not know, do not guess, "
    "and offer to connect the visitor with a person from the team. "
    "When you use a passage, mention its title and link."
)
NOTHING_FOUND = (
    "No help-centre article matches the visitor's latest message. Do not guess facts about the product "
    "or the site: if the visitor asks something you cannot answer from this conversation, say that you do "
    "not know and offer to connect them with a person from the team. Greetings and thanks may be answered briefly."
)


@dataclass
class Grounding:
    hits: list[Hit] = field(default_factory=list)
    has_articles: bool = False

    def system(self, base: str) -> str:
        """Return the system prompt: the site's own, then the grounding instructions and passages."""
        if not self.has_articles:
            return base
        parts = [base.strip()] if base.strip() else []
        if not self.hits:
            parts.append(NOTHING_FOUND)
            return "\n\n".join(parts)
        parts.append(INSTRUCTIONS)
        for number, hit in enumerate(self.hits, start=1):
            label = f"{hit.title} — {hit.heading}" if hit.heading else hit.title
            lines = [f"[{number}] {label}"]
            if hit.url:
                lines.append(f"URL: {hit.url}")
            lines.append(hit.text)
            parts.append("\n".join(lines))
        return "\n\n".join(parts)

    def sources_for(self, endpoint: Endpoint, end: StreamEnd | None, text: str) -> list[dict]:
        """Return the sources of a finished reply: none without text; the answerer's own for `kb`."""
        if not text:
            return []
        if endpoint.protocol == "kb":
            # It names the one article it quoted at its end; a reply stopped before that names none.
            return list(end.sources or []) if end is not None else []
        return self.sources

    @property
    def sources(self) -> list[dict]:
        """Return each article given to the model once, in rank order."""
        seen: list[dict] = []
        for hit in self.hits:
            if hit.source not in seen:
                seen.append(hit.source)
        return seen


async def ground(site_id: int, question: str, turns: list[ChatMessage] | None = None) -> Grounding:
    """Retrieve the passages for a visitor's question, read with the previous one when alone it finds none."""
    hits = await retrieve(site_id, question, settings.KB_PROMPT_PASSAGES)
    if hits == []:
        # A follow-up such as "could you elaborate?" is about the visitor's previous question.
        earlier = [turn.content for turn in (turns or []) if turn.role == "user" and turn.content != question]
        if earlier:
            hits = await retrieve(site_id, f"{earlier[-1]} {question}", settings.KB_PROMPT_PASSAGES)
    return Grounding(hits=hits or [], has_articles=hits is not None)

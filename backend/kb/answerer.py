"""The provider kind `kb`: answers with the best matching help passage and its link, with no model."""

from __future__ import annotations

import asyncio
import re

from channels.db import database_sync_to_async

from backend.kb.search import Hit, is_confident, query_terms, search
from backend.kb.text import unwrap
from backend.providers.base import ChatRequest, Endpoint, ProviderError, ProviderStream, StreamEnd

SCHEME = "kb://"
WORDS_PER_CHUNK = 3
NO_QUESTION = "Hello! Ask me a question, and I'll look for the answer in our help articles."
DONT_KNOW = (
    "I'm sorry, I couldn't find the answer to that in our help articles, and I'd rather not guess. "
    "Would you like to talk to a person from our team?"
)


def best_passage(site_key: str, question: str) -> Hit | None:
    """Return the site's best passage for the question, or None when none is relevant enough."""
    from backend.sites.models import Site

    site_id = Site.objects.filter(key=site_key).values_list("id", flat=True).first()
    if site_id is None:
        return None
    hits = search(site_id, question, limit=1)
    return hits[0] if hits and is_confident(hits[0], question) else None


def answer_text(hit: Hit | None, question: str) -> str:
    if hit is None:
        # "Hi", "thanks": nothing to look up, so nothing to admit not knowing either.
        return DONT_KNOW if query_terms(question) else NO_QUESTION
    heading = f"**{hit.heading}**\n\n" if hit.heading else ""
    link = f"[{hit.title}]({hit.url})" if hit.url else hit.title
    return f"{heading}{unwrap(hit.text)}\n\nSource: {link}"


def chunks(text: str) -> list[str]:
    """Split text into pieces of a few words, keeping every character (whitespace included)."""
    words = re.findall(r"\s*\S+\s*", text) or [text]
    return ["".join(words[i : i + WORDS_PER_CHUNK]) for i in range(0, len(words), WORDS_PER_CHUNK)]


async def stream(endpoint: Endpoint, request: ChatRequest) -> ProviderStream:
    site_key = endpoint.base_url.removeprefix(SCHEME).strip("/") if endpoint.base_url.startswith(SCHEME) else ""
    if not site_key:
        raise ProviderError("kb answerer has no site to answer for", code="not_configured")
    question = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
    hit = await database_sync_to_async(best_passage)(site_key, question)
    for piece in chunks(answer_text(hit, question)):
        yield piece
        await asyncio.sleep(0)  # let a "stop" from the visitor cancel between pieces
    yield StreamEnd("stop", input_tokens=0, output_tokens=0, sources=[hit.source] if hit else [])

"""Embeddings through a provider's own endpoint: OpenAI-compatible, Gemini and Ollama wire formats.

Passages are embedded when they are imported or saved (synchronously); a visitor's question is embedded
while the reply is prepared (asynchronously, through the shared httpx client).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import httpx
from django.conf import settings

from backend.kb.models import KnowledgeSettings, Passage
from backend.providers.base import Endpoint, ProviderError
from backend.providers.client import get_client
from backend.providers.http import error_message_from_body

log = logging.getLogger(__name__)

DEFAULTS = {
    "openai": ("https://api.openai.com/v1", "text-embedding-3-small"),
    "gemini": ("https://generativelanguage.googleapis.com/v1beta", "gemini-embedding-001"),
    "ollama": ("http://localhost:11434", "nomic-embed-text"),
}
BATCH = 64  # texts per request for the formats that take a list


@dataclass(frozen=True)
class Embedder:
    kind: str
    base_url: str
    model: str
    api_key: str = field(default="", repr=False)

    @property
    def name(self) -> str:
        """Identify the vector space: vectors of different models are never compared."""
        return f"{self.kind}:{self.model}"


def embedder_for(knowledge: KnowledgeSettings | None) -> Embedder | None:
    """Return the site's embedder when it turned embeddings on, with the chat provider's key as fallback."""
    if knowledge is None or not knowledge.use_embeddings:
        return None
    from backend.providers.models import ProviderConfig

    base_url, model = DEFAULTS[knowledge.embedding_kind]
    api_key = knowledge.embedding_api_key or ""
    if not api_key:
        config = ProviderConfig.objects.filter(
            site_id=knowledge.site_id, kind=knowledge.embedding_kind, enabled=True
        ).first()
        api_key = (config.api_key or "") if config else ""
    return Embedder(
        kind=knowledge.embedding_kind,
        base_url=(knowledge.embedding_base_url or base_url).rstrip("/"),
        model=knowledge.embedding_model or model,
        api_key=api_key,
    )


def requests_for(embedder: Embedder, texts: list[str]) -> list[tuple[str, dict, dict]]:
    """Return the (url, headers, json) of each HTTP request that embeds the texts, in order."""
    headers = {"Content-Type": "application/json"}
    if embedder.kind == "openai":
        if embedder.api_key:
            headers["Authorization"] = f"Bearer {embedder.api_key}"
        url = f"{embedder.base_url}/embeddings"
        return [
            (url, headers, {"model": embedder.model, "input": texts[i : i + BATCH]})
            for i in range(0, len(texts), BATCH)
        ]
    if embedder.kind == "ollama":
        url = f"{embedder.base_url}/api/embed"
        return [
            (url, headers, {"model": embedder.model, "input": texts[i : i + BATCH]})
            for i in range(0, len(texts), BATCH)
        ]
    if embedder.kind == "gemini":
        if embedder.api_key:
            headers["x-goog-api-key"] = embedder.api_key
        url = f"{embedder.base_url}/models/{embedder.model}:embedContent"
        return [(url, headers, {"content": {"parts": [{"text": text}]}}) for text in texts]
    raise ValueError(f"unknown embeddings kind {embedder.kind!r}")


def parse(embedder: Embedder, data: object, expected: int) -> list[list[float]]:
    """Read the vectors out of one response body, checking their number and shape."""
    try:
        if embedder.kind == "openai":
            items = sorted(data["data"], key=lambda item: item["index"])
            vectors = [item["embedding"] for item in items]
        elif embedder.kind == "ollama":
            vectors = data["embeddings"]
        else:
            vectors = [data["embedding"]["values"]]
        vectors = [[float(x) for x in vector] for vector in vectors]
    except (KeyError, TypeError, ValueError):
        raise ProviderError(f"{embedder.kind} sent a malformed embeddings response", code="malformed") from None
    if len(vectors) != expected or any(not vector for vector in vectors):
        raise ProviderError(f"{embedder.kind} sent {len(vectors)} embeddings for {expected} texts", code="malformed")
    return vectors


def _endpoint(embedder: Embedder) -> Endpoint:
    # Only used to word errors the way the chat adapters do (kind and address, never the key).
    return Endpoint(kind=embedder.kind, protocol="embeddings", base_url=embedder.base_url, model=embedder.model)


def _check(embedder: Embedder, response: httpx.Response) -> object:
    if response.status_code >= 400:
        message, code = error_message_from_body(response.content)
        raise ProviderError(
            f"{embedder.kind} embeddings answered {response.status_code}: {message or response.reason_phrase}",
            status=response.status_code,
            code=code,
        )
    try:
        return response.json()
    except ValueError:
        raise ProviderError(f"{embedder.kind} sent a malformed embeddings response", code="malformed") from None


def _timeout() -> httpx.Timeout:
    return httpx.Timeout(settings.PROVIDER_FIRST_BYTE_TIMEOUT, connect=settings.PROVIDER_CONNECT_TIMEOUT)


def embed_sync(embedder: Embedder, texts: list[str]) -> list[list[float]]:
    """Embed texts from synchronous code (imports, the admin)."""
    vectors: list[list[float]] = []
    try:
        with httpx.Client(timeout=_timeout(), follow_redirects=False, trust_env=False) as client:
            for url, headers, body in requests_for(embedder, texts):
                count = len(body.get("input", [None]))
                vectors += parse(embedder, _check(embedder, client.post(url, json=body, headers=headers)), count)
    except httpx.HTTPError as error:
        from backend.providers.http import transport_error

        raise transport_error(_endpoint(embedder), error) from None
    return vectors


async def embed(embedder: Embedder, text: str) -> list[float]:
    """Embed one text (a visitor's question) from async code."""
    url, headers, body = requests_for(embedder, [text])[0]
    try:
        response = await get_client().post(url, json=body, headers=headers, timeout=_timeout())
    except httpx.HTTPError as error:
        from backend.providers.http import transport_error

        raise transport_error(_endpoint(embedder), error) from None
    return parse(embedder, _check(embedder, response), 1)[0]


def embed_passages(site_id: int) -> int:
    """Embed the site's passages that have no vector from its current model; return how many were done."""
    embedder = embedder_for(KnowledgeSettings.objects.filter(site_id=site_id).first())
    if embedder is None:
        return 0
    todo = list(
        Passage.objects.filter(site_id=site_id)
        .exclude(embedding_model=embedder.name)
        .order_by("id")
        .values_list("id", "title", "heading", "text")
    )
    for start in range(0, len(todo), BATCH):
        batch = todo[start : start + BATCH]
        vectors = embed_sync(embedder, [passage_text(title, heading, text) for _, title, heading, text in batch])
        for (passage_id, *_), vector in zip(batch, vectors, strict=True):
            Passage.objects.filter(pk=passage_id).update(embedding=vector, embedding_model=embedder.name)
    return len(todo)


def passage_text(title: str, heading: str, text: str) -> str:
    return "\n".join(part for part in (title, heading, text) if part)


def cosine(a: list[float], b: list[float]) -> float:
    if len(a) != len(b):
        return 0.0
    dot = math.fsum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(math.fsum(x * x for x in a)) * math.sqrt(math.fsum(y * y for y in b))
    return dot / norm if norm else 0.0


def nearest(site_id: int, embedder: Embedder, vector: list[float], limit: int) -> list[int]:
    """Return the ids of the site's passages closest to the vector, closest first."""
    rows = Passage.objects.filter(site_id=site_id, embedding_model=embedder.name).values_list("id", "embedding")
    scored = sorted(((cosine(vector, embedding or []), pk) for pk, embedding in rows), key=lambda x: (-x[0], x[1]))
    return [pk for score, pk in scored[:limit] if score > 0]

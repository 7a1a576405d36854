"""Retrieval for a visitor's question: full-text rank, mixed with embeddings when the site turns them on."""

from __future__ import annotations

import logging
from dataclasses import replace

from channels.db import database_sync_to_async

from backend.kb import embeddings
from backend.kb.models import KnowledgeSettings, Passage
from backend.kb.search import Hit, search
from backend.providers.base import ProviderError

log = logging.getLogger(__name__)

RRF_K = 60  # the constant of reciprocal-rank fusion (Cormack et al. 2009); damps the weight of rank 1
CANDIDATES = 20  # how deep each ranking is read before fusing


def fuse(rankings: list[list[int]]) -> list[tuple[int, float]]:
    """Merge rankings of passage ids by reciprocal-rank fusion; return (id, fused score), best first."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, passage_id in enumerate(ranking, start=1):
            scores[passage_id] = scores.get(passage_id, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def _fulltext(site_id: int, question: str, limit: int) -> tuple[list[Hit], embeddings.Embedder | None] | None:
    # One cheap query for the many sites without articles: their replies must not pay for retrieval.
    if not Passage.objects.filter(site_id=site_id).exists():
        return None
    knowledge = KnowledgeSettings.objects.filter(site_id=site_id).first()
    embedder = embeddings.embedder_for(knowledge)
    return search(site_id, question, CANDIDATES if embedder else limit), embedder


def _mixed(site_id: int, hits: list[Hit], embedder: embeddings.Embedder, vector: list[float], limit: int) -> list[Hit]:
    semantic = embeddings.nearest(site_id, embedder, vector, CANDIDATES)
    fused = fuse([[hit.passage_id for hit in hits], semantic])[:limit]
    known = {hit.passage_id: hit for hit in hits}
    missing = [pk for pk, _ in fused if pk not in known]
    rows = Passage.objects.filter(pk__in=missing).values_list(
        "id", "article_id", "title", "article__url", "heading", "text"
    )
    for row in rows:
        known[row[0]] = Hit(*row, score=0.0)
    return [replace(known[pk], score=score) for pk, score in fused]


async def retrieve(site_id: int, question: str, limit: int) -> list[Hit] | None:
    """Return the passages that best answer the question, best first, or None when the site has none at all.

    It never fails because of embeddings: without them it answers from the full-text rank.
    """
    found = await database_sync_to_async(_fulltext)(site_id, question, limit)
    if found is None:
        return None
    hits, embedder = found
    if embedder is None:
        return hits[:limit]
    try:
        vector = await embeddings.embed(embedder, question)
    except ProviderError as error:
        # Semantic search is an improvement, not a requirement: answer from the full-text rank.
        log.warning("embeddings failed, using full-text search only: site=%s reason=%s", site_id, error.message)
        return hits[:limit]
    return await database_sync_to_async(_mixed)(site_id, hits, embedder, vector, limit)

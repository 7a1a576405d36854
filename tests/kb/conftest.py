"""The knowledge-base world: Acme (fake OpenAI) and Docs (the offline `kb` answerer), both with the
built-in help corpus imported, plus a fake embeddings server speaking OpenAI, Gemini and Ollama."""

from __future__ import annotations

import json
import re

import pytest

from backend.kb.importer import import_paths
from backend.kb.models import CORPUS_DIR
from backend.sites.provisioning import ProviderSpec, SiteSpec, create_site
from tests.conftest import ACME_ORIGIN
from tests.fakes.server import Recorded, Reply, fixtures

HELP_BASE = "https://help.parley.example"


def import_corpus(site) -> None:
    report = import_paths(site, [CORPUS_DIR], base_url=HELP_BASE, source_prefix="builtin:")
    assert not report.failed, report.failed


@pytest.fixture
def acme_help(acme):
    """Acme, answering with the fake OpenAI server, grounded on the built-in corpus."""
    import_corpus(acme)
    return acme


@pytest.fixture
def docs(prices):
    """A site whose only provider is the offline `kb` answerer, with the built-in corpus."""
    site = create_site(SiteSpec(name="Docs", origins=[ACME_ORIGIN], providers=[ProviderSpec(kind="kb")]))
    import_corpus(site)
    return site


# -- a fake embeddings endpoint ------------------------------------------------------------------------
# Each dimension is a topic; a text's vector counts its words per topic. Words like "expensive" appear in
# no help article, so only the semantic side can connect them to the article about costs.
TOPICS = [
    {"cost", "costs", "price", "prices", "expensive", "cheap", "pay", "money", "dollars", "plan", "plans"},
    {"parcel", "parcels", "shipping", "arrive", "arrives", "send", "deliver", "delivery"},
    {"day", "days", "month", "week", "weeks", "year"},
    {"person", "human", "agent", "someone", "team"},
]


def topic_vector(text: str) -> list[float]:
    words = re.findall(r"[a-z]+", text.lower())
    return [float(sum(word in topic for word in words)) for topic in TOPICS]


def embeddings_responder(request: Recorded) -> Reply:
    body = request.json()
    if request.path.endswith(":embedContent"):
        if not request.headers.get("x-goog-api-key"):
            error = {"error": {"code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT"}}
            return Reply(status=400, pieces=[json.dumps(error).encode()], content_type="application/json")
        text = body["content"]["parts"][0]["text"]
        data = {"embedding": {"values": topic_vector(text)}}
    elif request.path.endswith("/api/embed"):
        data = {"model": body["model"], "embeddings": [topic_vector(t) for t in body["input"]]}
    elif request.path.endswith("/embeddings"):
        if not request.headers.get("authorization", "").startswith("Bearer "):
            error = {"error": {"message": "You didn't provide an API key.", "type": "invalid_request_error"}}
            return Reply(status=401, pieces=[json.dumps(error).encode()], content_type="application/json")
        # Out of order on purpose: clients must sort by "index".
        items = [{"object": "embedding", "index": i, "embedding": topic_vector(t)} for i, t in enumerate(body["input"])]
        data = {"object": "list", "data": list(reversed(items)), "model": body["model"], "usage": {"prompt_tokens": 1}}
    else:
        return Reply(status=404, pieces=[b'{"error": "not found"}'], content_type="application/json")
    return Reply(pieces=[json.dumps(data).encode()], content_type="application/json")


embeddings_server_session, embeddings_server = fixtures(embeddings_responder, "embeddings_server_session")

"""Retrieval on the built-in help corpus: realistic questions find the right article first, on the
database's own engine (SQLite FTS5 here, PostgreSQL full-text search in the services suite)."""

from __future__ import annotations

import pytest

from backend.kb.search import is_confident, matched_terms, query_terms, search

pytestmark = pytest.mark.django_db

EMBED = "Embedding the chat widget on your website"
OPTIONS = "The script tag and its options"
INSTALL = "Installing and running Parley"
SITES = "Adding a site"
PROVIDERS = "AI providers and API keys"
QUOTAS = "Quotas, budgets and rate limits"
AGENTS = "Talking to a person: agents and handoff"
WEBHOOKS = "Webhooks and the tickets API"
PRIVACY = "Privacy and security"
DEPLOY = "Deploying Parley to production"
KB = "Help articles and grounded answers"
TROUBLE = "Troubleshooting the chat"

QUESTIONS = [
    ("how do I embed the widget?", EMBED),
    ("Where do I paste the script tag on my website?", EMBED),
    ("The chat doesn't connect on www.acme.example, why?", TROUBLE),
    ("How do I install Parley?", INSTALL),
    ("what's the admin password after make run?", INSTALL),
    ("How can I run the test suite?", INSTALL),
    ("can I change the port of the server?", INSTALL),
    ("What does data-color do?", OPTIONS),
    ("which data attributes does the script tag accept?", OPTIONS),
    ("How do I create a new site with createsite?", SITES),
    ("how do I list all my sites", SITES),
    ("Where is my OpenAI API key stored? Is it encrypted?", PROVIDERS),
    ("Can I use Mistral or DeepSeek instead of OpenAI?", PROVIDERS),
    ("how much does each reply cost?", PROVIDERS),
    ("How do I set a monthly budget cap so I don't overspend?", QUOTAS),
    ("a visitor is flooding the chat, can I rate limit them?", QUOTAS),
    ("How can a visitor talk to a human agent?", AGENTS),
    ("does the bot stop answering when an agent takes over?", AGENTS),
    ("How are webhook requests signed?", WEBHOOKS),
    ("how do I send a ticket from my helpdesk?", WEBHOOKS),
    ("What do you store about visitors? GDPR privacy question", PRIVACY),
    ("How do I deploy to production with daphne?", DEPLOY),
    ("which environment variables do I need for production? FIELD_ENCRYPTION_KEY?", DEPLOY),
    ("Can I use PostgreSQL and Redis?", DEPLOY),
    ("How do I import my help articles?", KB),
    ("can it answer without an AI model or API key?", KB),
    ("the chat says the assistant is not set up", TROUBLE),
    ("replies are cut short", TROUBLE),
]

OFF_TOPIC = [
    "What's the weather in Paris tomorrow?",
    "Who won the football world cup in 1998?",
    "Give me a recipe for banana bread",
    "Do you sell shoes in size 44?",
    "What is the capital of Australia?",
    "asdfgh qwerty",
    "Give me a recipe",
    "Tell me a joke",
    "How do I cancel my subscription?",
    "Where is my order #1234?",
    "I forgot the password of my bank account",
]


@pytest.mark.parametrize(("question", "expected"), QUESTIONS)
def test_the_expected_article_comes_first(acme_help, question, expected):
    hits = search(acme_help.pk, question, limit=3)
    assert hits, question
    assert hits[0].title == expected, [(h.title, h.heading, h.score) for h in hits]
    assert is_confident(hits[0], question), "the offline answerer would refuse a question the corpus answers"


@pytest.mark.parametrize("question", OFF_TOPIC)
def test_off_topic_questions_are_below_the_answer_threshold(acme_help, question):
    hits = search(acme_help.pk, question, limit=3)
    assert not hits or not is_confident(hits[0], question), [(h.title, h.heading, h.score) for h in hits]


def test_a_passage_with_every_word_ranks_above_one_with_a_rarer_single_word(acme_help):
    # "paste" and "script" both occur in the embedding article's opening; the options article has only
    # "script" (in its title), which an OR query alone would rank first.
    hits = search(acme_help.pk, "Where do I paste the script tag on my website?", limit=5)
    assert hits[0].complete and hits[0].title == EMBED
    assert [h.complete for h in hits] == sorted((h.complete for h in hits), reverse=True)


def test_hits_carry_their_article_link_and_heading(acme_help):
    hit = search(acme_help.pk, "How are webhook requests signed?")[0]
    assert hit.url == "https://help.parley.example/help/webhooks/"
    assert hit.heading == "Signed requests"
    assert "HMAC-SHA256" in hit.text
    assert hit.source == {"title": WEBHOOKS, "url": "https://help.parley.example/help/webhooks/"}


def test_the_offline_threshold_is_the_engines_score(acme_help, settings):
    # Not every word is in one passage: answered only at or above the engine's threshold.
    question = "Where is my OpenAI API key stored? Is it encrypted?"
    hit = search(acme_help.pk, question)[0]
    assert not hit.complete
    settings.KB_MIN_SCORE_SQLITE = settings.KB_MIN_SCORE_POSTGRESQL = hit.score
    assert is_confident(hit, question)
    settings.KB_MIN_SCORE_SQLITE = settings.KB_MIN_SCORE_POSTGRESQL = hit.score * 1.01
    assert not is_confident(hit, question)


def test_one_shared_word_is_never_enough_however_high_it_scores(acme_help, settings):
    question = "Do you sell shoes in size 44?"
    hit = search(acme_help.pk, question)[0]
    assert not hit.complete
    assert matched_terms(hit.passage_id, query_terms(question)) == 1
    settings.KB_MIN_SCORE_SQLITE = settings.KB_MIN_SCORE_POSTGRESQL = 0
    assert not is_confident(hit, question)

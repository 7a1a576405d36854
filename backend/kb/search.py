"""Full-text search over passages with the database's own engine: SQLite FTS5 or PostgreSQL.

search() is the one entry point; it hides which engine runs. Scores are the engine's own, higher is
better: -bm25() on SQLite (title, heading and text weighted 4:2:1), ts_rank() on PostgreSQL (weights A, B, C).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

# The PostgreSQL text-search configuration; the GIN index of migration 0002 is built with the same one.
PG_CONFIG = "english"
MAX_TERMS = 24
MAX_TERM_LENGTH = 40

# Words that carry no topic in a visitor's question. PostgreSQL's english configuration drops these
# itself; dropping them here too keeps SQLite's OR-query from matching every passage on "how" or "the".
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can cannot could did do does doing down during each few for from further get got had
    has have having he her here hers herself him himself his how i if in into is it its itself just let me
    more most my myself no nor not of off on once only or other our ours ourselves out over own please same
    she should so some such than that the their theirs them themselves then there these they this those
    through to too under until up very want was we were what when where which while who whom why will with
    would you your yours yourself yourselves hi hello thanks thank""".split()
)


@dataclass(frozen=True)
class Hit:
    passage_id: int
    article_id: int
    title: str
    url: str
    heading: str
    text: str
    score: float
    complete: bool = False  # the passage contains every search word of the question

    @property
    def source(self) -> dict:
        return {"title": self.title, "url": self.url}


def query_terms(text: str) -> list[str]:
    """Reduce a visitor's text to plain search words: letters and digits only, no engine syntax."""
    terms: list[str] = []
    for word in re.findall(r"\w+", text.lower()):
        word = word.strip("_")
        if len(word) < 2 or len(word) > MAX_TERM_LENGTH or word in STOPWORDS or word in terms:
            continue
        terms.append(word)
    return terms[:MAX_TERMS]


def fts5_query(terms: list[str], match_all: bool = False) -> str:
    """Return an FTS5 MATCH expression: each term a quoted string (so AND, NEAR, * stay words), ORed or ANDed."""
    return (" AND " if match_all else " OR ").join('"' + term.replace('"', '""') + '"' for term in terms)


def min_score() -> float:
    """Return the relevance the offline answerer needs, on this database engine's scale."""
    if connection.vendor == "postgresql":
        return settings.KB_MIN_SCORE_POSTGRESQL
    return settings.KB_MIN_SCORE_SQLITE


def search(site_id: int, text: str, limit: int = 5) -> list[Hit]:
    """Return the site's passages that best match the text, best first.

    Passages containing every search word come first, ranked among themselves; then those containing
    some, by the engine's rank of an OR query.
    """
    terms = query_terms(text)
    if not terms or limit < 1:
        return []
    if connection.vendor == "sqlite":
        engine = _search_sqlite
    elif connection.vendor == "postgresql":
        engine = _search_postgresql
    else:
        raise ImproperlyConfigured(f"the knowledge base needs SQLite or PostgreSQL, not {connection.vendor}")
    complete = engine(site_id, terms, limit, True)
    hits = [replace(hit, complete=True) for hit in complete]
    if len(terms) > 1 and len(hits) < limit:
        seen = {hit.passage_id for hit in hits}
        hits += [hit for hit in engine(site_id, terms, limit + len(hits), False) if hit.passage_id not in seen]
    return hits[:limit]


def is_confident(hit: Hit, text: str) -> bool:
    """Tell whether a hit is good enough for the offline answerer to quote as the answer to the text.

    A passage with every search word is; one with only some needs at least two of them and the engine's
    score at or above the threshold (one shared word, such as "size", is a coincidence, not an answer).
    """
    if hit.complete:
        return True
    return hit.score >= min_score() and matched_terms(hit.passage_id, query_terms(text)) >= 2


def matched_terms(passage_id: int, terms: list[str]) -> int:
    """Count how many of the terms the engine finds in one passage, in one query."""
    if not terms:
        return 0
    if connection.vendor == "sqlite":
        probe = "(SELECT count(*) FROM kb_passage_fts WHERE kb_passage_fts MATCH %s AND rowid = %s)"
        sql = "SELECT " + " + ".join([probe] * len(terms))
        params: list = []
        for term in terms:
            params += [fts5_query([term]), passage_id]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return int(cursor.fetchone()[0])
    from django.contrib.postgres.search import SearchQuery
    from django.db.models import BooleanField, ExpressionWrapper, Q

    from backend.kb.models import Passage

    probes = {
        f"t{i}": ExpressionWrapper(
            Q(document=SearchQuery(term, config=PG_CONFIG, search_type="plain")), output_field=BooleanField()
        )
        for i, term in enumerate(terms)
    }
    row = (
        Passage.objects.filter(pk=passage_id)
        .annotate(document=passage_vector())
        .annotate(**probes)
        .values_list(*probes)
        .first()
    )
    return sum(bool(value) for value in row or ())


def _search_sqlite(site_id: int, terms: list[str], limit: int, match_all: bool) -> list[Hit]:
    sql = """
        SELECT p.id, p.article_id, p.title, a.url, p.heading, p.text, -bm25(kb_passage_fts, 4.0, 2.0, 1.0) AS score
        FROM kb_passage_fts
        JOIN kb_passage p ON p.id = kb_passage_fts.rowid
        JOIN kb_article a ON a.id = p.article_id
        WHERE kb_passage_fts MATCH %s AND p.site_id = %s
        ORDER BY score DESC, p.id
        LIMIT %s
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [fts5_query(terms, match_all), site_id, limit])
        return [Hit(*row) for row in cursor.fetchall()]


def passage_vector():
    """Return the weighted tsvector expression that the GIN index and the queries share."""
    from django.contrib.postgres.search import SearchVector

    return (
        SearchVector("title", weight="A", config=PG_CONFIG)
        + SearchVector("heading", weight="B", config=PG_CONFIG)
        + SearchVector("text", weight="C", config=PG_CONFIG)
    )


def _search_postgresql(site_id: int, terms: list[str], limit: int, match_all: bool) -> list[Hit]:
    from django.contrib.postgres.search import SearchQuery, SearchRank

    from backend.kb.models import Passage

    query = SearchQuery(terms[0], config=PG_CONFIG, search_type="plain")
    for term in terms[1:]:
        other = SearchQuery(term, config=PG_CONFIG, search_type="plain")
        query = (query & other) if match_all else (query | other)
    rows = (
        Passage.objects.filter(site_id=site_id)
        .annotate(document=passage_vector())
        .filter(document=query)
        .annotate(score=SearchRank(passage_vector(), query))
        .order_by("-score", "id")
        .values_list("id", "article_id", "title", "article__url", "heading", "text", "score")[:limit]
    )
    return [Hit(*row) for row in rows]

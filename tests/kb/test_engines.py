"""Each database engine's index exists only where it belongs and stays in step with the passages."""

from __future__ import annotations

import pytest
from django.contrib.postgres.search import SearchQuery
from django.db import connection

from backend.kb.models import Article, Passage
from backend.kb.search import PG_CONFIG, passage_vector, search

pytestmark = pytest.mark.django_db

sqlite_only = pytest.mark.skipif("connection.vendor != 'sqlite'", reason="SQLite FTS5 index")
postgres_only = pytest.mark.skipif("connection.vendor != 'postgresql'", reason="PostgreSQL GIN index")


def table_exists(name: str) -> bool:
    with connection.cursor() as cursor:
        return name in connection.introspection.table_names(cursor)


@sqlite_only
def test_sqlite_keeps_the_fts5_table_in_step_through_inserts_updates_and_deletes(acme):
    article = Article.objects.create(site=acme, title="Alpha", body="# Alpha\n\nfirst words\n\n## Two\n\nsecond words")
    Passage.objects.filter(article=article, heading="Two").update(text="changed words")
    assert search(acme.pk, "changed")[0].heading == "Two"
    assert search(acme.pk, "second") == []
    article.delete()
    assert search(acme.pk, "first") == []
    with connection.cursor() as cursor:
        # Raises if the index and the passages table disagree.
        cursor.execute("INSERT INTO kb_passage_fts(kb_passage_fts, rank) VALUES ('integrity-check', 1)")
    assert not Passage.objects.exists()


@postgres_only
def test_postgresql_searches_through_the_gin_index(acme_help):
    assert not table_exists("kb_passage_fts")
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        query = SearchQuery("widget", config=PG_CONFIG)
        plan = Passage.objects.annotate(document=passage_vector()).filter(document=query).explain()
    assert "kb_passage_search_gin" in plan


@sqlite_only
def test_sqlite_has_no_postgresql_index(acme):
    with connection.cursor() as cursor:
        indexes = connection.introspection.get_constraints(cursor, "kb_passage")
    assert "kb_passage_search_gin" not in indexes
    assert table_exists("kb_passage_fts")

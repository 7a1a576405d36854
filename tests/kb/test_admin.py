"""Articles and knowledge settings in the admin: passages re-split on save, HTML reduced to text, keys write-only."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from backend.kb.models import Article, KnowledgeSettings
from backend.kb.search import search

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-1234567")
    client.force_login(user)
    return client


def article_form(site, **fields) -> dict:
    return {
        "site": site.pk,
        "title": "Refunds",
        "url": "",
        "format": "markdown",
        "body": "Text.",
        "source_path": "",
    } | fields


def test_saving_an_article_in_the_admin_re_splits_its_passages(admin_client, acme):
    response = admin_client.post(
        "/admin/kb/article/add/",
        article_form(acme, body="# Refunds\n\nWithin 30 days.\n\n## Exceptions\n\nSale items."),
    )
    assert response.status_code == 302, response.content[:2000]
    article = Article.objects.get(site=acme)
    assert list(article.passages.values_list("heading", flat=True)) == ["", "Exceptions"]
    response = admin_client.post(
        f"/admin/kb/article/{article.pk}/change/", article_form(acme, body="# Refunds\n\nWithin 60 days.")
    )
    assert response.status_code == 302
    assert list(article.passages.values_list("text", flat=True)) == ["Within 60 days."]
    assert search(acme.pk, "sale items exceptions") == []
    assert search(acme.pk, "refund within 60 days")[0].article_id == article.pk


def test_pasted_html_is_stored_as_text_only(admin_client, acme):
    html = '<h1>Refunds</h1><p onclick="steal()">Within <b>30</b> days.</p><script>steal()</script>'
    response = admin_client.post("/admin/kb/article/add/", article_form(acme, format="html", body=html))
    assert response.status_code == 302
    article = Article.objects.get(site=acme)
    assert article.body == "# Refunds\n\nWithin 30 days."
    assert "steal" not in article.body


def test_a_hostile_url_is_refused_with_a_message(admin_client, acme):
    response = admin_client.post("/admin/kb/article/add/", article_form(acme, url="javascript:alert(1)"))
    assert response.status_code == 200
    assert b"is not an http(s) URL or a path starting with /" in response.content
    assert not Article.objects.exists()


def test_the_article_pages_render(admin_client, acme):
    Article.objects.create(site=acme, title="Refunds <b>bold</b>", body="Within 30 days.")
    article = Article.objects.get()
    assert admin_client.get("/admin/kb/article/").status_code == 200
    page = admin_client.get(f"/admin/kb/article/{article.pk}/change/")
    assert page.status_code == 200
    assert b"Refunds <b>bold</b>" not in page.content  # escaped, never rendered as markup
    assert b"Within 30 days." in page.content  # the passages are listed
    assert admin_client.get("/admin/kb/knowledgesettings/add/").status_code == 200


def test_the_embeddings_key_is_write_only(admin_client, acme):
    form = {
        "site": acme.pk,
        "use_embeddings": "",
        "embedding_kind": "openai",
        "embedding_base_url": "",
        "embedding_model": "",
        "embedding_api_key": "sk-embed-secret-9876",
    }
    assert admin_client.post("/admin/kb/knowledgesettings/add/", form).status_code == 302
    row = KnowledgeSettings.objects.get(site=acme)
    assert row.embedding_api_key == "sk-embed-secret-9876"
    page = admin_client.get(f"/admin/kb/knowledgesettings/{row.pk}/change/")
    assert b"sk-embed-secret-9876" not in page.content
    assert "••••9876".encode() in page.content
    # Saving with the field blank keeps the key; ticking "remove" clears it.
    assert (
        admin_client.post(f"/admin/kb/knowledgesettings/{row.pk}/change/", form | {"embedding_api_key": ""}).status_code
        == 302
    )
    row.refresh_from_db()
    assert row.embedding_api_key == "sk-embed-secret-9876"
    admin_client.post(
        f"/admin/kb/knowledgesettings/{row.pk}/change/",
        form | {"embedding_api_key": "", "clear_embedding_api_key": "on"},
    )
    row.refresh_from_db()
    assert row.embedding_api_key == ""


def test_a_malformed_embeddings_url_is_refused(admin_client, acme):
    form = {
        "site": acme.pk,
        "embedding_kind": "ollama",
        "embedding_base_url": "file:///etc/passwd",
        "embedding_model": "",
    }
    response = admin_client.post("/admin/kb/knowledgesettings/add/", form)
    assert response.status_code == 200
    assert b"Use an http:// or https:// URL with a host" in response.content
    assert not KnowledgeSettings.objects.exists()

"""`make run`'s setupdemo: the demo site answers from the built-in corpus, with or without a key."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from backend.kb.models import CORPUS_DIR, Article, Passage
from backend.providers.models import ProviderConfig
from backend.sites.models import Site

pytestmark = pytest.mark.django_db


def setupdemo() -> str:
    out = StringIO()
    call_command("setupdemo", stdout=out)
    return out.getvalue()


def chain(site: Site) -> list[str]:
    return list(site.provider_configs.filter(enabled=True).order_by("position", "id").values_list("kind", flat=True))


def test_without_a_key_the_demo_site_answers_with_kb_from_the_built_in_corpus(settings):
    settings.DEMO_PROVIDER_KEYS = [("openai", "")]
    settings.PUBLIC_URL = "http://127.0.0.1:8000"
    out = setupdemo()
    site = Site.objects.get(key=settings.DEMO_SITE_KEY)
    assert chain(site) == ["kb"]
    assert "built-in help articles" in out
    corpus_files = sorted(CORPUS_DIR.glob("*.md"))
    assert Article.objects.filter(site=site).count() == len(corpus_files) >= 10
    embedding = Article.objects.get(site=site, source_path="builtin:embedding-the-widget.md")
    assert embedding.url == "http://127.0.0.1:8000/help/embedding-the-widget/"


def test_running_it_again_imports_nothing_twice(settings):
    settings.DEMO_PROVIDER_KEYS = [("openai", "")]
    setupdemo()
    articles = list(Article.objects.order_by("id").values_list("id", "updated"))
    passages = list(Passage.objects.order_by("id").values_list("id", flat=True))
    out = setupdemo()
    assert "Help articles" not in out  # nothing created or updated
    assert list(Article.objects.order_by("id").values_list("id", "updated")) == articles
    assert list(Passage.objects.order_by("id").values_list("id", flat=True)) == passages
    assert ProviderConfig.objects.filter(kind="kb").count() == 1


def test_with_an_openai_key_the_demo_site_uses_openai_grounded_on_the_same_corpus(settings):
    settings.DEMO_PROVIDER_KEYS = [("openai", "")]
    setupdemo()  # a first run without a key, then the key is set
    settings.DEMO_PROVIDER_KEYS = [("openai", "sk-demo-key-0000"), ("mistral", "")]
    out = setupdemo()
    site = Site.objects.get(key=settings.DEMO_SITE_KEY)
    assert chain(site) == ["openai", "kb"]
    assert ProviderConfig.objects.get(site=site, kind="openai").api_key == "sk-demo-key-0000"
    assert "OpenAI, grounded on the built-in help articles" in out
    assert "sk-demo-key-0000" not in out
    assert Article.objects.filter(site=site).count() == len(list(CORPUS_DIR.glob("*.md")))


def test_another_documented_provider_variable_works_the_same_way(settings):
    settings.DEMO_PROVIDER_KEYS = [("openai", ""), ("mistral", "mistral-demo-key"), ("deepseek", "")]
    out = setupdemo()
    assert chain(Site.objects.get(key=settings.DEMO_SITE_KEY)) == ["mistral", "kb"]
    assert "Mistral" in out


def test_the_built_in_corpus_imports_cleanly():
    from backend.kb.importer import parse_file

    for path in sorted(CORPUS_DIR.iterdir()):
        parsed = parse_file(path, "https://x.example")
        assert parsed.title and parsed.url.startswith("https://x.example/help/"), path.name
        assert parsed.url.endswith(f"/{path.stem}/"), path.name

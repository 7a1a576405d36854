"""The built-in help centre about Parley, served so that the demo's source links lead somewhere."""

from __future__ import annotations

from dataclasses import dataclass

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from backend.kb.importer import BadFile, parse_file
from backend.kb.models import CORPUS_DIR
from backend.kb.text import markdown_sections, paragraphs, unwrap


@dataclass(frozen=True)
class Page:
    slug: str
    title: str
    sections: list[tuple[str, list[str]]]


def load(slug: str) -> Page:
    path = CORPUS_DIR / f"{slug}.md"
    # The slug converter allows only [-a-zA-Z0-9_], so the path cannot leave the corpus folder.
    if not path.is_file():
        raise Http404("No such help article.")
    try:
        parsed = parse_file(path)
    except BadFile:
        raise Http404("No such help article.") from None
    sections = [
        (section.heading if section.heading != parsed.title else "", paragraphs(unwrap(section.text)))
        for section in markdown_sections(parsed.body)
    ]
    return Page(slug=slug, title=parsed.title, sections=sections)


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    pages = [load(path.stem) for path in sorted(CORPUS_DIR.glob("*.md"))]
    return render(request, "kb/index.html", {"pages": pages})


@require_GET
def article(request: HttpRequest, slug: str) -> HttpResponse:
    return render(request, "kb/article.html", {"page": load(slug)})

"""The widget's byte budget and build hygiene: what /widget.js serves is small, fresh and eval-free."""

from __future__ import annotations

import hashlib
import re

import pytest
from django.conf import settings

pytestmark = pytest.mark.django_db

SOURCE = settings.BASE_DIR / "widget" / "parley.js"
BUILD = settings.BASE_DIR / "widget" / "dist" / "parley.js"

# Everything loaded before the panel opens, and everything at all: the widget is one script today.
BUDGET_BEFORE_OPEN_GZIP = 10 * 1024
BUDGET_TOTAL_GZIP = 25 * 1024


def test_what_widget_js_serves_fits_the_gzip_budget(client):
    served = client.get("/widget.js", headers={"Accept-Encoding": "gzip"})
    assert served["Content-Encoding"] == "gzip"
    assert len(served.content) <= BUDGET_BEFORE_OPEN_GZIP, f"{len(served.content)} bytes gzipped"
    assert len(served.content) <= BUDGET_TOTAL_GZIP


def test_the_widget_loads_nothing_else():
    # No second script, stylesheet, font or image is fetched by the widget itself (avatars come from the owner).
    source = SOURCE.read_text()
    assert "import(" not in source and "createElement('script')" not in source
    assert "@font-face" not in source and "@import" not in source and "fetch(" not in source


def test_the_served_build_matches_the_committed_source():
    banner = BUILD.read_text().splitlines()[0]
    recorded = re.search(r"sha256:([0-9a-f]{64})", banner)
    assert recorded, "widget/dist/parley.js lacks the build banner: run `make widget`"
    assert recorded.group(1) == hashlib.sha256(SOURCE.read_bytes()).hexdigest(), "stale build: run `make widget`"


def test_the_widget_never_evaluates_strings_or_writes_html():
    source = BUILD.read_text().split("\n", 1)[1]  # the code as served, without the banner comment
    for forbidden in ("eval(", "new Function", "innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
        assert forbidden not in source, forbidden
    # Styles only through constructable stylesheets: no <style> element, no style attribute.
    assert 'createElement("style")' not in source and ".style" not in source and '"style"' not in source

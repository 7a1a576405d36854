"""The demo page and the widget script."""

from __future__ import annotations

import functools
import gzip
import hashlib
from dataclasses import dataclass

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseNotModified
from django.shortcuts import render
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET

from backend.sites.models import Site

# The minified build of widget/parley.js (`make widget`); committed, so serving needs no Node.
WIDGET_SOURCE = settings.BASE_DIR / "widget" / "dist" / "parley.js"


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes
    etag: str


def _load_asset(path) -> Asset:
    body = path.read_bytes()
    return Asset(body=body, gzipped=gzip.compress(body, 9, mtime=0), etag=f'"{hashlib.sha256(body).hexdigest()[:32]}"')


@functools.cache
def _cached_asset(path, mtime_ns: int) -> Asset:
    return _load_asset(path)


def widget_asset() -> Asset:
    # Keyed by mtime so an edited widget is served at once in development.
    return _cached_asset(WIDGET_SOURCE, WIDGET_SOURCE.stat().st_mtime_ns)


@require_GET
def widget_js(request: HttpRequest) -> HttpResponse:
    asset = widget_asset()
    if asset.etag in request.headers.get("If-None-Match", ""):
        response: HttpResponse = HttpResponseNotModified()
    else:
        use_gzip = "gzip" in request.headers.get("Accept-Encoding", "")
        response = HttpResponse(
            asset.gzipped if use_gzip else asset.body, content_type="text/javascript; charset=utf-8"
        )
        if use_gzip:
            response["Content-Encoding"] = "gzip"
    response["ETag"] = asset.etag
    # Short caching without a versioned URL, so a fix reaches every host page within minutes.
    response["Cache-Control"] = "public, max-age=300, stale-while-revalidate=86400"
    response["Cross-Origin-Resource-Policy"] = "cross-origin"
    response["Access-Control-Allow-Origin"] = "*"
    patch_vary_headers(response, ["Accept-Encoding"])
    return response


@require_GET
def demo(request: HttpRequest) -> HttpResponse:
    site = Site.objects.filter(key=settings.DEMO_SITE_KEY).first()
    return render(request, "demo.html", {"site": site})

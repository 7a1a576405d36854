"""GET /widget.js: the script the snippet loads, with caching headers."""

from __future__ import annotations

import gzip

import pytest

pytestmark = pytest.mark.django_db


def test_it_serves_the_widget_as_javascript_with_an_etag(client):
    response = client.get("/widget.js")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/javascript; charset=utf-8"
    assert response["ETag"] and "max-age" in response["Cache-Control"]
    assert b"window.Parley" in response.content


def test_it_answers_304_when_the_browser_has_the_same_version(client):
    etag = client.get("/widget.js")["ETag"]
    again = client.get("/widget.js", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""


def test_it_serves_gzip_to_browsers_that_accept_it(client):
    plain = client.get("/widget.js").content
    zipped = client.get("/widget.js", headers={"Accept-Encoding": "gzip, br"})
    assert zipped["Content-Encoding"] == "gzip" and "Accept-Encoding" in zipped["Vary"]
    assert gzip.decompress(zipped.content) == plain


def test_only_get_is_allowed(client):
    assert client.post("/widget.js").status_code == 405


def test_the_demo_page_embeds_the_demo_site(client):
    from django.core.management import call_command

    call_command("setupdemo", stdout=open("/dev/null", "w"))  # noqa: SIM115
    page = client.get("/")
    assert page.status_code == 200
    assert b'data-site="demo"' in page.content and b"/widget.js" in page.content

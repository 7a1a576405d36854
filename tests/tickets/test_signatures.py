"""The webhook signature matrix: only a fresh request signed with the site's secret gets in."""

from __future__ import annotations

import base64
import json
import time

import pytest

from backend.tickets.models import Ticket
from tests.tickets.conftest import TICKET, good_reply, signed_headers

BODY = json.dumps(TICKET).encode()
WRONG_SECRET = "whsec_" + base64.b64encode(b"w" * 32).decode()


def assert_refused(response) -> None:
    assert response.status_code == 401, response.content
    assert response.json()["error"] == "bad_signature"
    assert Ticket.objects.count() == 0


def test_it_accepts_a_request_signed_with_the_site_secret(api, helpdesk, fake_llm):
    fake_llm.queue(good_reply())
    response = api.post(helpdesk, raw=BODY)
    assert response.status_code == 202
    assert Ticket.objects.get().subject == "Where is my parcel?"


def test_it_rejects_a_signature_made_with_another_secret(api, helpdesk):
    assert_refused(api.post(helpdesk, raw=BODY, secret=WRONG_SECRET))


def test_it_rejects_a_signature_over_a_different_body(api, helpdesk):
    headers = signed_headers(helpdesk.webhook_secret, BODY)
    assert_refused(api.post(helpdesk, raw=BODY.replace(b"parcel", b"parcels"), headers=headers))


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_it_rejects_a_request_missing_a_signature_header(api, helpdesk, missing):
    headers = signed_headers(helpdesk.webhook_secret, BODY)
    del headers[missing]
    response = api.post(helpdesk, raw=BODY, headers=headers)
    assert_refused(response)
    assert missing in response.json()["message"]


def test_it_rejects_a_stale_signature(api, helpdesk):
    assert_refused(api.post(helpdesk, raw=BODY, timestamp=time.time() - 6 * 60))


def test_it_rejects_a_signature_from_the_future(api, helpdesk):
    assert_refused(api.post(helpdesk, raw=BODY, timestamp=time.time() + 6 * 60))


def test_it_accepts_a_slightly_skewed_clock(api, helpdesk, fake_llm):
    fake_llm.queue(good_reply())
    assert api.post(helpdesk, raw=BODY, timestamp=time.time() - 4 * 60).status_code == 202


def test_it_rejects_a_replayed_signature_under_a_new_id(api, helpdesk):
    headers = signed_headers(helpdesk.webhook_secret, BODY, webhook_id="msg_a")
    headers["webhook-id"] = "msg_b"  # the id is part of what is signed
    assert_refused(api.post(helpdesk, raw=BODY, headers=headers))


def test_it_accepts_a_rotated_pair_where_the_second_signature_is_valid(api, helpdesk, fake_llm):
    fake_llm.queue(good_reply())
    stale_key = signed_headers(WRONG_SECRET, BODY)["webhook-signature"]
    headers = signed_headers(helpdesk.webhook_secret, BODY)
    headers["webhook-signature"] = f"{stale_key} {headers['webhook-signature']}"
    assert api.post(helpdesk, raw=BODY, headers=headers).status_code == 202


def test_it_rejects_a_rotated_pair_where_no_signature_is_valid(api, helpdesk):
    headers = signed_headers(helpdesk.webhook_secret, BODY)
    wrong = signed_headers(WRONG_SECRET, BODY)["webhook-signature"]
    headers["webhook-signature"] = f"{wrong} {wrong}"
    assert_refused(api.post(helpdesk, raw=BODY, headers=headers))


@pytest.mark.parametrize(
    "signature",
    ["garbage", "v1,not base64!!", "v2,c2lnbmF0dXJl", ",", "v1,", "v1," + base64.b64encode(b"short").decode()],
)
def test_it_rejects_a_malformed_signature_header(api, helpdesk, signature):
    headers = signed_headers(helpdesk.webhook_secret, BODY)
    headers["webhook-signature"] = signature
    assert_refused(api.post(helpdesk, raw=BODY, headers=headers))


@pytest.mark.parametrize("timestamp", ["yesterday", "", "1e400"])
def test_it_rejects_a_malformed_timestamp(api, helpdesk, timestamp):
    headers = signed_headers(helpdesk.webhook_secret, BODY)
    headers["webhook-timestamp"] = timestamp
    assert_refused(api.post(helpdesk, raw=BODY, headers=headers))


def test_another_sites_secret_does_not_sign_for_this_site(api, helpdesk, other_site):
    assert_refused(api.post(helpdesk, raw=BODY, secret=other_site.webhook_secret))


def test_a_body_that_is_not_utf8_is_refused_without_a_server_error(api, helpdesk):
    raw = b"\xff\xfe{}"
    headers = signed_headers(helpdesk.webhook_secret, b"{}")
    assert_refused(api.post(helpdesk, raw=raw, headers=headers))

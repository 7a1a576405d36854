"""The tickets world: site "Helpdesk" summarizes with a fake OpenAI on 127.0.0.1; "Other" is a second site.

Helpdesk's webhook secret signs its requests; Other's secret must never open Helpdesk's tickets.
"""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from standardwebhooks.webhooks import Webhook

from backend.sites.provisioning import ProviderSpec, SiteSpec, create_site
from tests.fakes.server import FakeServer, fixtures
from tests.fakes.structured import openai_json, refuse_unexpected

SUMMARY_KEY = "sk-summary-0123456789abcdefWXYZ"
GOOD_SUMMARY = {
    "summary": "The customer's parcel to Oslo is a week late.",
    "category": "shipping",
    "sentiment": "negative",
    "urgency": "high",
    "language": "en",
    "next_action": "Check the tracking number and reply with a delivery date.",
}
TICKET = {
    "external_id": "ZD-1001",
    "subject": "Where is my parcel?",
    "messages": [
        {
            "role": "customer",
            "author": "Kari",
            "text": "My parcel to Oslo is a week late.",
            "at": "2026-11-20T10:00:00Z",
        },
        {"role": "agent", "author": "Bob", "text": "Sorry! Let me check."},
    ],
}


llm_server, fake_llm = fixtures(refuse_unexpected, "llm_server")


@pytest.fixture
def helpdesk(fake_llm: FakeServer, prices):
    return create_site(
        SiteSpec(
            name="Helpdesk",
            origins=["https://helpdesk.example"],
            providers=[
                ProviderSpec(kind="openai", base_url=f"{fake_llm.origin}/v1", api_key="sk-chat-unused-0000"),
                ProviderSpec(
                    kind="openai",
                    base_url=f"{fake_llm.origin}/v1",
                    api_key=SUMMARY_KEY,
                    model="gpt-4o-mini",
                    purpose="summary",
                ),
            ],
        )
    )


@pytest.fixture
def other_site(prices):
    return create_site(SiteSpec(name="Other", origins=["https://other.example"]))


def signed_headers(
    secret: str, body: bytes, *, webhook_id: str = "msg_1", timestamp: float | None = None
) -> dict[str, str]:
    """Sign like an integrator using the Standard Webhooks library."""
    when = dt.datetime.fromtimestamp(time.time() if timestamp is None else timestamp, tz=dt.UTC)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": Webhook(secret).sign(webhook_id, when, body.decode()),
    }


def as_client_headers(headers: dict[str, str]) -> dict[str, str]:
    return {"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()}


class Api:
    """Post tickets and read them back as an integrator would, running queued work on commit."""

    def __init__(self, client, capture) -> None:
        self.client = client
        self.capture = capture

    def post(
        self,
        site,
        data: object = None,
        *,
        raw: bytes | None = None,
        webhook_id: str = "msg_1",
        headers: dict[str, str] | None = None,
        secret: str | None = None,
        timestamp: float | None = None,
    ):
        body = raw if raw is not None else json.dumps(data if data is not None else TICKET).encode()
        if headers is None:
            headers = signed_headers(secret or site.webhook_secret, body, webhook_id=webhook_id, timestamp=timestamp)
        with self.capture(execute=True):
            return self.client.post(
                f"/api/sites/{site.key}/tickets/",
                data=body,
                content_type="application/json",
                **as_client_headers(headers),
            )

    def get(self, site, ticket_id: str, token: str | None = None):
        auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
        return self.client.get(f"/api/sites/{site.key}/tickets/{ticket_id}/", **auth)


@pytest.fixture
def api(client, django_capture_on_commit_callbacks) -> Api:
    return Api(client, django_capture_on_commit_callbacks)


def good_reply(**changes):
    return openai_json(json.dumps(GOOD_SUMMARY | changes))

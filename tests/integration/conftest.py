"""The seams between apps: site "Shop" chats with the shared fake OpenAI and summarizes with its own fake.

Ann answers Shop, Gus answers Globex, Root is a superuser. Summary requests reach only `summary_llm`, so
a test can count them apart from the bot's replies.
"""

from __future__ import annotations

import json
from importlib import import_module

import pytest
from django.apps import apps
from django.contrib.auth.models import Group, User

from backend.sites.provisioning import ProviderSpec, SiteSpec, create_site
from tests.agents.conftest import make_agent
from tests.conftest import FAKE_KEY
from tests.fakes.server import FakeServer, fixtures
from tests.fakes.structured import openai_json, refuse_unexpected

SHOP_ORIGIN = "https://shop.example"
SUMMARY = {
    "summary": "The customer wants a refund for a broken kettle.",
    "category": "refunds",
    "sentiment": "negative",
    "urgency": "high",
    "language": "en",
    "next_action": "Send a prepaid return label and refund on receipt.",
}


def summary_reply(**changes) -> object:
    return openai_json(json.dumps(SUMMARY | changes), usage=(120, 40))


summary_server, summary_llm = fixtures(refuse_unexpected, "summary_server")


@pytest.fixture
def shop(fake_openai: FakeServer, summary_llm: FakeServer, prices):
    return create_site(
        SiteSpec(
            name="Shop",
            origins=[SHOP_ORIGIN],
            providers=[
                ProviderSpec(kind="openai", base_url=f"{fake_openai.origin}/v1", api_key=FAKE_KEY),
                ProviderSpec(
                    kind="openai",
                    base_url=f"{summary_llm.origin}/v1",
                    api_key="sk-summary-integ-0123456789abcdef",
                    model="gpt-4o-mini",
                    purpose="summary",
                ),
            ],
        )
    )


@pytest.fixture
def agents_group(db) -> Group:
    """The "Support agents" group as the agents migrations make it (transactional tests flush it)."""
    for name in ("0002_support_agents_group", "0003_support_agents_tickets_usage_articles"):
        import_module(f"backend.agents.migrations.{name}").create_group(apps, None)
    return Group.objects.get(name="Support agents")


@pytest.fixture
def ann(shop, agents_group) -> User:
    return make_agent("ann", "Ann", "Agent", shop)


@pytest.fixture
def gus(globex, agents_group) -> User:
    return make_agent("gus", "Gus", "Globex", globex)


@pytest.fixture
def root(db) -> User:
    return User.objects.create_superuser("root", "root@parley.test", None)

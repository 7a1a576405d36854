"""What a reply costs the database: the price comes with the endpoint, and the count per reply does not grow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal

import pytest

from backend.chat import services
from backend.providers.models import Price
from backend.providers.pricing import price_for
from backend.sites.provisioning import ProviderSpec, SiteSpec, create_site
from tests.processes import ROOT, server_env

pytestmark = pytest.mark.django_db


def site_with(*providers: ProviderSpec):
    return create_site(SiteSpec(name="Priced", origins=["https://priced.example"], providers=list(providers)))


def test_each_endpoint_comes_with_the_price_the_price_table_gives_its_model(prices):
    site = site_with(
        ProviderSpec(kind="openai", api_key="sk-a-1234567890"),  # no model: the kind's default model
        ProviderSpec(kind="openai", api_key="sk-b-1234567890", model="gpt-4.1"),
    )
    priced = services.priced_chat_endpoints(site)
    assert [endpoint.model for endpoint, _ in priced] == [e.model for e in services.chat_endpoints(site)]
    for endpoint, prices in priced:
        assert prices is not None
        assert prices == price_for(endpoint.kind, endpoint.model)


def test_a_model_missing_from_the_price_table_has_no_price_and_a_local_one_costs_nothing(prices):
    site = site_with(
        ProviderSpec(kind="openai", api_key="sk-a-1234567890", model="brand-new-model"),
        ProviderSpec(kind="lmstudio", base_url="http://127.0.0.1:1234/v1", model="llama"),
    )
    (_, unknown), (_, local) = services.priced_chat_endpoints(site)
    assert unknown is None
    assert local == (Decimal(0), Decimal(0))


def test_an_edited_price_is_the_one_read_with_the_endpoint(prices):
    site = site_with(ProviderSpec(kind="openai", api_key="sk-a-1234567890", model="gpt-4.1"))
    Price.objects.filter(kind="openai", model="gpt-4.1").update(input_per_million=7, output_per_million=9)
    [(_, price)] = services.priced_chat_endpoints(site)
    assert price == (Decimal(7), Decimal(9))


def test_a_reply_costs_no_more_database_queries_than_measured(tmp_path):
    """Counted by bench/queries.py: every statement on every connection, over three replies.

    The target is 5 (issue 9) and is missed: the quota reservation and its settlement with the usage ledger
    cost about 12 of these, grounding and the takeover check 2 (docs/benchmarks.md, "Queries per reply").
    This bound keeps the count from growing unnoticed.
    """
    result = subprocess.run(
        [sys.executable, "-m", "bench.queries", f"sqlite:///{tmp_path / 'q.sqlite3'}"],
        cwd=ROOT,
        env=server_env(f"sqlite:///{tmp_path / 'q.sqlite3'}", BENCH_REPLIES="3", LOG_LEVEL="WARNING")
        | {"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
        check=True,
    )
    counts = json.loads(result.stdout.strip().splitlines()[-1])["by_kind"]
    # SQLite shows the transaction's BEGIN as a statement; PostgreSQL does not (it is not a query).
    queries = sum(count for kind, count in counts.items() if kind != "BEGIN")
    assert queries / 3 <= 21, counts

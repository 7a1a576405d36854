"""What a reply costs the database: the price comes with the endpoint, and the count per reply does not grow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
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


def queries_per_reply(database_url: str, **env: str) -> tuple[float, dict]:
    """Counted by bench/queries.py: every statement on every connection, over three replies."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.queries", database_url],
        cwd=ROOT,
        env=server_env(database_url, BENCH_REPLIES="3", LOG_LEVEL="WARNING", **env)
        | {"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
        check=True,
    )
    counts = json.loads(result.stdout.strip().splitlines()[-1])["by_kind"]
    # SQLite shows the transaction's BEGIN as a statement; PostgreSQL does not (it is not a query).
    return sum(count for kind, count in counts.items() if kind != "BEGIN") / 3, counts


@pytest.mark.skipif(
    not (os.environ.get("REDIS_URL") and os.environ.get("DATABASE_URL", "").startswith("postgres")),
    reason="needs PostgreSQL and Redis (run `make test-services`)",
)
def test_with_postgresql_and_redis_a_reply_costs_five_queries():
    """Issue 9's target. The five: one read before the call (history, state, configuration stamp, help
    passages and the duplicate check in one query); the visitor's message, stored beside the call; after
    it, the reply, the usage ledger's row, and the conversation's last activity. The quota is reserved and
    settled in Redis."""
    import psycopg

    from tests.services.cluster import with_database

    url, name = os.environ["DATABASE_URL"], f"parley_hot_path_{uuid.uuid4().hex[:8]}"
    admin = with_database(url, "postgres")
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        per_reply, counts = queries_per_reply(with_database(url, name), REDIS_URL=os.environ["REDIS_URL"])
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    assert per_reply <= 5, counts


def test_with_the_database_ledger_a_reply_costs_no_more_queries_than_measured(tmp_path):
    """Without Redis (SQLite, `make run`) the quota ledger is rows: its reservation and settlement cost
    six of these (tests/quotas/test_database_ledger.py). This bound keeps the count from growing unnoticed."""
    per_reply, counts = queries_per_reply(f"sqlite:///{tmp_path / 'q.sqlite3'}")
    assert per_reply <= 11, counts

"""The database ledger (no Redis: SQLite, `make run`): what a reply costs in queries, so it cannot grow unnoticed."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from backend.quotas.services import Refusal, get_quota, reserve, settle
from tests.quotas.conftest import set_quota, totals

# No outer transaction, as in production: a test transaction would add savepoint statements.
pytestmark = pytest.mark.django_db(transaction=True)

MINI = (Decimal("0.15"), Decimal("0.60"))
COST = Decimal("0.000255")  # 100 × 0.15 + 400 × 0.60 micro-dollars


@pytest.fixture(autouse=True)
def database_ledger(settings):
    settings.QUOTA_LEDGER = "database"


def reply(site, quota) -> tuple[list[str], list[str]]:
    """Reserve and settle one reply; return the statements each step ran."""
    with CaptureQueriesContext(connection) as reserving:
        held = reserve(site.pk, 100, 500, MINI, quota=quota)
    assert not isinstance(held, Refusal)
    with CaptureQueriesContext(connection) as settling:
        # With the cost, as the consumer passes it (without it, settle reads the price table).
        settle(
            held, kind="openai", model="gpt-4o-mini", input_tokens=100, output_tokens=400, status="complete", cost=COST
        )
    return [q["sql"].split()[0] for q in reserving], [q["sql"].split()[0] for q in settling]


@pytest.mark.parametrize(
    "caps", [{}, {"daily_token_cap": 1_000_000, "monthly_cost_cap": Decimal("100")}], ids=["no caps", "caps"]
)
def test_a_reply_costs_three_queries_to_reserve_and_three_to_settle(acme, caps):
    set_quota(acme, **caps)
    quota = get_quota(acme.pk)
    reply(acme, quota)  # the period's counters are created by the first reply of the day
    reserving, settling = reply(acme, quota)
    # Three queries each, in a transaction. Reserving: read both counters, hold on both in one conditional
    # UPDATE, write the reservation.
    assert reserving == ["SELECT", "BEGIN", "UPDATE", "INSERT", "COMMIT"]
    # Settling: mark the reservation settled, add the usage to both counters (RETURNING the totals the 80%
    # warning needs), write the usage record.
    assert settling == ["BEGIN", "UPDATE", "UPDATE", "INSERT", "COMMIT"]
    assert totals(acme)["day"].tokens == 1000


def test_the_80_percent_warning_costs_queries_only_when_it_fires(acme):
    set_quota(acme, daily_token_cap=1250)
    quota = get_quota(acme.pk)
    reply(acme, quota)  # 40%
    _, settling = reply(acme, quota)  # 80%: mark the period warned, read the site's name for the message
    assert settling == ["BEGIN", "UPDATE", "UPDATE", "INSERT", "COMMIT", "UPDATE", "SELECT"]
    _, settling = reply(acme, quota)  # 100%, warned already this period
    assert settling == ["BEGIN", "UPDATE", "UPDATE", "INSERT", "COMMIT"]

"""The admin: quota settings on the site page, the usage page with its chart, and the 80% warning."""

from __future__ import annotations

import datetime as dt
import logging
import re
from decimal import Decimal

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.core import mail
from django.urls import reverse

from backend.chat.models import Conversation, Visitor
from backend.quotas.models import SiteQuota, UsageRecord
from backend.quotas.services import reserve, settle
from tests.admin_forms import form_data
from tests.quotas.conftest import set_quota

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 6, 15, 12, tzinfo=dt.UTC)
MINI = (Decimal("0.15"), Decimal("0.60"))
GPT41 = (Decimal("2"), Decimal("8"))


@pytest.fixture
def admin_client(client):
    user = get_user_model().objects.create_superuser("boss", "boss@example.com", "pw-long-enough-123")
    client.force_login(user)
    return client


def conversation(site) -> Conversation:
    visitor = Visitor.objects.create(site=site, token_hash=f"h{Visitor.objects.count()}")
    return Conversation.objects.create(site=site, visitor=visitor)


def bill(site, model: str, input_tokens: int, output_tokens: int, convo=None, price=MINI) -> UsageRecord:
    held = reserve(site.pk, input_tokens, output_tokens, price)
    return settle(
        held.id,
        kind="openai",
        model=model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        status="complete",
        conversation_id=convo.pk if convo else None,
    )


def test_the_site_page_links_to_its_usage_page_and_edits_the_caps(acme, admin_client):
    page = admin_client.get(reverse("admin:sites_site_change", args=[acme.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert reverse("admin:quotas_site_usage", args=[acme.pk]) in html
    for field in ["daily_token_cap", "monthly_token_cap", "daily_cost_cap", "monthly_cost_cap", "timezone"]:
        assert f"quota-0-{field}" in html


def change_form(client, site, **quota) -> dict:
    """The site page's own form as the browser would post it, with the quota row filled in."""
    data = form_data(client.get(reverse("admin:sites_site_change", args=[site.pk])).content.decode())
    data |= {
        "quota-0-timezone": "UTC",
        "quota-0-visitor_messages_per_minute": "10",
        "quota-0-ip_messages_per_minute": "30",
        "quota-0-ip_connections": "5",
        "quota-0-max_history_messages": "40",
        "quota-0-quota_message": "Out of answers for today.",
    }
    data.update({f"quota-0-{key}": value for key, value in quota.items()})
    return data


def test_an_owner_sets_a_daily_cost_cap_and_time_zone_in_the_admin(acme, admin_client):
    url = reverse("admin:sites_site_change", args=[acme.pk])
    response = admin_client.post(
        url, change_form(admin_client, acme, daily_cost_cap="3.50", timezone="America/New_York")
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    quota = SiteQuota.objects.get(site=acme)
    assert (quota.daily_cost_cap, quota.timezone, quota.quota_message) == (
        Decimal("3.5"),
        "America/New_York",
        "Out of answers for today.",
    )


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("daily_cost_cap", "-1", "greater than or equal to 0"),
        ("monthly_token_cap", "-10", "greater than or equal to 0"),
        ("monthly_cost_cap", "abc", "Enter a number"),
        ("timezone", "Nowhere/Town", "is not a known time zone"),
    ],
)
def test_the_admin_refuses_bad_caps(acme, admin_client, field, value, error):
    url = reverse("admin:sites_site_change", args=[acme.pk])
    response = admin_client.post(url, change_form(admin_client, acme, **{field: value}))
    assert response.status_code == 200
    assert error in response.content.decode()
    assert not SiteQuota.objects.exists(), "showing the site page writes nothing"


def test_the_usage_page_shows_remaining_quota_a_chart_by_model_and_the_costliest_conversations(acme, admin_client):
    set_quota(acme, daily_token_cap=100_000, monthly_cost_cap=Decimal("10"))
    cheap, dear = conversation(acme), conversation(acme)
    with time_machine.travel(NOW - dt.timedelta(days=3), tick=False):
        bill(acme, "gpt-4o-mini", 1000, 500, cheap)
    with time_machine.travel(NOW, tick=False):
        bill(acme, "gpt-4o-mini", 2000, 1000, cheap)
        bill(acme, "gpt-4.1", 10_000, 2000, dear, price=GPT41)
        page = admin_client.get(reverse("admin:quotas_site_usage", args=[acme.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    today = re.search(r'<tr id="day">(.*?)</tr>', html, re.S).group(1)
    cells = re.findall(r"<td>(.*?)</td>", today)
    # Today: 3,000 + 12,000 tokens; cost 0.000900 (mini) + 0.036000 (gpt-4.1).
    assert cells[:3] == ["15000", "100000", "85000"]
    assert cells[3:6] == ["0.036900", "no cap", "—"]
    month = re.findall(r"<td>(.*?)</td>", re.search(r'<tr id="month">(.*?)</tr>', html, re.S).group(1))
    assert month[:6] == ["16500", "no cap", "—", "0.037350", "10.000000", "9.962650"]
    # The chart is inline SVG, one colour per model, with no third-party script or stylesheet.
    assert html.count('<svg xmlns="http://www.w3.org/2000/svg" viewBox') == 2
    assert "2026-06-12 gpt-4o-mini: 1500" in html and "2026-06-15 gpt-4.1: 12000" in html
    assert not re.search(r"<script[^>]+src=\"https?://", html)
    costliest = re.findall(r'href="/admin/chat/conversation/([0-9a-f-]+)/change/"', html)
    assert costliest == [str(dear.pk), str(cheap.pk)]
    assert "near its cap" not in html


def test_the_usage_page_needs_a_staff_login(acme, client):
    response = client.get(reverse("admin:quotas_site_usage", args=[acme.pk]))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_the_usage_page_of_an_unknown_site_is_not_found(admin_client):
    assert admin_client.get(reverse("admin:quotas_site_usage", args=[999999])).status_code == 404


def test_at_80_percent_of_a_cap_the_page_shows_a_banner_and_the_admins_get_one_email(
    acme, admin_client, settings, caplog
):
    settings.EMAIL_HOST = "smtp.example.net"
    settings.ADMINS = [("Ops", "ops@example.net")]
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    set_quota(acme, daily_token_cap=1000)
    caplog.set_level(logging.WARNING)
    bill(acme, "gpt-4o-mini", 500, 200)  # 70%: nothing yet
    assert mail.outbox == [] and "near cap" not in caplog.text
    bill(acme, "gpt-4o-mini", 50, 50)  # 80%
    bill(acme, "gpt-4o-mini", 50, 50)  # 90%: already warned this period
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["ops@example.net"]
    assert "daily token cap: 80% used" in mail.outbox[0].body and "Acme" in mail.outbox[0].subject
    assert caplog.text.count("usage near cap") == 1
    page = admin_client.get(reverse("admin:quotas_site_usage", args=[acme.pk])).content.decode()
    assert "Usage is near its cap — daily token cap: 90% used." in page
    site_page = admin_client.get(reverse("admin:sites_site_change", args=[acme.pk])).content.decode()
    assert "daily token cap: 90% used" in site_page


def test_without_email_settings_the_warning_is_only_logged(acme, settings, caplog):
    settings.EMAIL_HOST = ""
    settings.ADMINS = [("Ops", "ops@example.net")]
    set_quota(acme, monthly_cost_cap=Decimal("0.001"))
    caplog.set_level(logging.WARNING)
    bill(acme, "gpt-4o-mini", 1000, 1200)  # 0.00087 USD: 87%
    assert "monthly cost cap: 87% used" in caplog.text
    assert mail.outbox == []


def test_staff_without_permission_to_view_usage_cannot_see_the_page(acme, client):
    user = get_user_model().objects.create_user("clerk", "clerk@example.com", "pw-long-enough-123", is_staff=True)
    client.force_login(user)
    assert client.get(reverse("admin:quotas_site_usage", args=[acme.pk])).status_code == 404

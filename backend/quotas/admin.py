from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.contrib import admin
from django.db.models import Count, F, Sum
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path, reverse
from django.utils.html import format_html

from backend.agents import access
from backend.agents.scoping import SiteScopedMixin
from backend.quotas.chart import colour_for, stacked_bars
from backend.quotas.models import SiteQuota, UsageRecord
from backend.quotas.services import get_quota, near_caps, period_starts, usage_summary
from backend.sites.models import Site

CHART_DAYS = 30


class SiteQuotaInline(admin.StackedInline):
    model = SiteQuota
    can_delete = False
    max_num = 1
    verbose_name = "Caps and limits"
    verbose_name_plural = "Caps and limits"
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "timezone",
                    ("daily_token_cap", "monthly_token_cap"),
                    ("daily_cost_cap", "monthly_cost_cap"),
                    ("visitor_messages_per_minute", "ip_messages_per_minute", "ip_connections"),
                    "max_history_messages",
                    "quota_message",
                ]
            },
        )
    ]


def usage_link(site: Site) -> str:
    """Return the link from a site's admin page to its usage page, with the 80% warning when it applies."""
    if not site.pk:
        return "Save the site to see its usage."
    url = reverse("admin:quotas_site_usage", args=[site.pk])
    warnings = near_caps(usage_summary(site.pk))
    if warnings:
        return format_html('<a href="{}">Usage and quota</a> <strong>({})</strong>', url, "; ".join(warnings))
    return format_html('<a href="{}">Usage and quota</a>', url)


@admin.register(UsageRecord)
class UsageRecordAdmin(SiteScopedMixin, admin.ModelAdmin):
    """The ledger of provider calls: read-only, filterable, with a usage page per site."""

    list_display = [
        "created",
        "site",
        "provider",
        "model",
        "input_tokens",
        "output_tokens",
        "cost",
        "status",
        "usage_page",
    ]
    list_filter = ["site", "provider", "status"]
    date_hierarchy = "created"

    @admin.display(description="usage page")
    def usage_page(self, record: UsageRecord) -> str:
        # Agents cannot open site pages (they hold secrets), so the ledger links to each site's usage page.
        return format_html(
            '<a href="{}">Usage of the site</a>', reverse("admin:quotas_site_usage", args=[record.site_id])
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def get_urls(self):
        view = self.admin_site.admin_view(self.site_usage_view)
        return [path("site/<int:site_id>/", view, name="quotas_site_usage"), *super().get_urls()]

    def site_usage_view(self, request: HttpRequest, site_id: int) -> HttpResponse:
        if not request.user.has_perm("quotas.view_usagerecord"):
            raise Http404
        site = Site.objects.filter(pk=site_id).first()
        if site is None or not access.can_act_on_site(request.user, site.pk):
            raise Http404("No such site")  # another site's usage does not exist for an agent
        context = self.admin_site.each_context(request) | usage_page_context(site)
        return render(request, "quotas/usage.html", context)


def usage_page_context(site: Site) -> dict:
    quota = get_quota(site.pk)
    summary = usage_summary(site.pk)
    today, _ = period_starts(quota.timezone)
    days = [today - dt.timedelta(days=n) for n in range(CHART_DAYS - 1, -1, -1)]
    rows = (
        UsageRecord.objects.filter(site=site, day__gte=days[0])
        .values("day", "model")
        .annotate(tokens=Sum(F("input_tokens") + F("output_tokens")), cost=Sum("cost"), calls=Count("id"))
        .order_by("day", "model")
    )
    models = sorted({row["model"] for row in rows})
    tokens = {model: {} for model in models}
    costs = {model: {} for model in models}
    for row in rows:
        tokens[row["model"]][row["day"]] = row["tokens"]
        costs[row["model"]][row["day"]] = row["cost"]
    daily = [
        {
            "day": day,
            "tokens": sum(tokens[m].get(day, 0) for m in models),
            "cost": sum((costs[m].get(day, Decimal(0)) for m in models), Decimal(0)),
        }
        for day in reversed(days)
    ]
    costliest = (
        UsageRecord.objects.filter(site=site, conversation__isnull=False, day__gte=days[0])
        .values("conversation")
        .annotate(cost=Sum("cost"), tokens=Sum(F("input_tokens") + F("output_tokens")), calls=Count("id"))
        .order_by("-cost", "-tokens")[:10]
    )
    return {
        "title": f"Usage of {site.name}",
        "site": site,
        "quota": quota,
        "summary": summary,
        "warnings": near_caps(summary),
        "token_chart": stacked_bars(days, tokens, "Tokens per day by model"),
        "cost_chart": stacked_bars(days, costs, "Cost per day by model", " USD"),
        "legend": [(model, colour_for(i)) for i, model in enumerate(models)],
        "daily": [d for d in daily if d["tokens"] or d["cost"]],
        "costliest": list(costliest),
    }

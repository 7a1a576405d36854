from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError, CommandParser

from backend.quotas.models import SiteQuota
from backend.quotas.services import usage_summary
from backend.sites.models import Site


def _text(value) -> str:
    return "no cap" if value is None else f"{value:,}" if isinstance(value, int) else f"{value} USD"


class Command(BaseCommand):
    help = "Print a site's tokens and cost today and this month, its caps and what remains."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("site_key")
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(self, *args, **options) -> None:
        site = Site.objects.filter(key=options["site_key"]).first()
        if site is None:
            raise CommandError(f"No site has the key {options['site_key']!r}; `manage.py sites` lists them.")
        summary = usage_summary(site.pk)
        if options["json"]:
            output = {
                period: {
                    "tokens": figures["tokens"],
                    "cost": str(figures["cost"]),
                    "token_cap": figures["token_cap"],
                    "cost_cap": None if figures["cost_cap"] is None else str(figures["cost_cap"]),
                }
                for period, figures in summary.items()
            }
            self.stdout.write(json.dumps(output))
            return
        zone = SiteQuota.objects.filter(site=site).values_list("timezone", flat=True).first() or "UTC"
        self.stdout.write(f"{site.name} ({site.key}), time zone {zone}")
        for period, label in (("day", "Today"), ("month", "This month")):
            figures = summary[period]
            self.stdout.write(f"{label} (from {figures['start'].isoformat()}):")
            self.stdout.write(
                f"  tokens {figures['tokens']:,} of {_text(figures['token_cap'])}"
                + ("" if figures["tokens_remaining"] is None else f", {figures['tokens_remaining']:,} remaining")
            )
            self.stdout.write(
                f"  cost {figures['cost']} USD of {_text(figures['cost_cap'])}"
                + ("" if figures["cost_remaining"] is None else f", {figures['cost_remaining']} USD remaining")
            )
            if figures["reserved_tokens"]:
                self.stdout.write(
                    f"  held for replies in progress: {figures['reserved_tokens']:,} tokens, "
                    f"{figures['reserved_cost']} USD"
                )

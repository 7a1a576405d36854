from __future__ import annotations

from django.core.management.base import BaseCommand

from backend.sites.models import Site


class Command(BaseCommand):
    help = "List sites with their keys, origins and chat providers."

    def handle(self, *args, **options) -> None:
        sites = Site.objects.prefetch_related("provider_configs").order_by("name")
        if not sites:
            self.stdout.write("No sites yet. Create one with: python manage.py createsite NAME --origin https://…")
            return
        for site in sites:
            chain = " → ".join(
                f"{c.kind}:{c.effective_model}"
                for c in site.provider_configs.all()
                if c.purpose == "chat" and c.enabled
            )
            summary = " → ".join(
                f"{c.kind}:{c.effective_model}"
                for c in site.provider_configs.all()
                if c.purpose == "summary" and c.enabled
            )
            self.stdout.write(
                f"{site.key}  {site.name}  origins={','.join(site.allowed_origins)}  chat={chain or '(none)'}"
                + (f"  summary={summary}" if summary else "")
            )

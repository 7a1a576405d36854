from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from backend.kb.importer import import_paths
from backend.kb.models import CORPUS_DIR
from backend.providers.models import ProviderConfig
from backend.sites.models import Site


class Command(BaseCommand):
    help = "Create the demo site and an admin user if they are missing (used by `make run`)."

    def handle(self, *args, **options) -> None:
        origins = [f"http://127.0.0.1:{settings.PORT}", f"http://localhost:{settings.PORT}"]
        site, created = Site.objects.get_or_create(
            key=settings.DEMO_SITE_KEY,
            defaults={"name": "Parley demo", "allowed_origins": origins, "title": "Parley demo"},
        )
        if not created and not set(origins) <= set(site.allowed_origins):
            site.allowed_origins = sorted(set(site.allowed_origins) | set(origins))
            site.save(update_fields=["allowed_origins"])
        # The built-in help corpus; re-importing updates the same articles (or leaves them unchanged).
        report = import_paths(site, [CORPUS_DIR], base_url=settings.PUBLIC_URL, source_prefix="builtin:")
        if report.created or report.updated:
            self.stdout.write(f"Help articles: {report.summary()}.")
        # The offline answerer needs no key; with a provider key it stays behind that provider.
        kb, _ = ProviderConfig.objects.get_or_create(
            site=site, purpose=ProviderConfig.Purpose.CHAT, kind="kb", defaults={"position": 0}
        )
        keyed = [(kind, key) for kind, key in settings.DEMO_PROVIDER_KEYS if key]
        if keyed:
            kind, key = keyed[0]
            config, _ = ProviderConfig.objects.update_or_create(
                site=site,
                purpose=ProviderConfig.Purpose.CHAT,
                kind=kind,
                defaults={"position": 0, "api_key": key, "enabled": True},
            )
            if kb.position <= config.position:
                kb.position = config.position + 1
                kb.save(update_fields=["position"])
            self.stdout.write(f"Demo site uses {config.get_kind_display()}, grounded on the built-in help articles.")
        else:
            self.stdout.write("Demo site answers from the built-in help articles (set OPENAI_API_KEY to use OpenAI).")

        User = get_user_model()
        if not User.objects.filter(is_superuser=True).exists():
            password = secrets.token_urlsafe(12)
            User.objects.create_superuser("admin", "admin@example.com", password)
            self.stdout.write(self.style.SUCCESS(f"Created admin user 'admin' with password: {password}"))
            self.stdout.write("(shown once; change it at /admin/password_change/)")
        self.stdout.write(f"Demo: http://127.0.0.1:{settings.PORT}/   Admin: http://127.0.0.1:{settings.PORT}/admin/")

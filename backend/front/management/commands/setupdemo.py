from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

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
        if settings.OPENAI_API_KEY:
            config, _ = ProviderConfig.objects.update_or_create(
                site=site,
                purpose=ProviderConfig.Purpose.CHAT,
                kind="openai",
                defaults={"position": 0, "api_key": settings.OPENAI_API_KEY, "enabled": True},
            )
            self.stdout.write("Demo site uses OpenAI (OPENAI_API_KEY is set).")
        elif not site.provider_configs.filter(enabled=True).exists():
            self.stdout.write("Demo site has no AI provider: set OPENAI_API_KEY, or add one in the admin.")

        User = get_user_model()
        if not User.objects.filter(is_superuser=True).exists():
            password = secrets.token_urlsafe(12)
            User.objects.create_superuser("admin", "admin@example.com", password)
            self.stdout.write(self.style.SUCCESS(f"Created admin user 'admin' with password: {password}"))
            self.stdout.write("(shown once; change it at /admin/password_change/)")
        self.stdout.write(f"Demo: http://127.0.0.1:{settings.PORT}/   Admin: http://127.0.0.1:{settings.PORT}/admin/")

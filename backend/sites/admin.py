from django.contrib import admin
from django.db import models
from django.utils.html import format_html

from backend.agents import access
from backend.agents.admin import AssignmentInline
from backend.agents.forms import SiteIdentityForm
from backend.providers.admin import ProviderConfigInline
from backend.quotas.admin import SiteQuotaInline, usage_link
from backend.sites.models import Site
from backend.sites.provisioning import snippet


@admin.register(Site)
class SiteAdmin(admin.ModelAdmin):
    list_display = ["name", "key", "origins", "created"]
    search_fields = ["name", "key"]
    readonly_fields = ["key", "embed_snippet", "created", "usage"]
    inlines = [ProviderConfigInline, SiteQuotaInline, AssignmentInline]
    # A URL typed without a scheme means https (Django 6's default).
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    form = SiteIdentityForm
    fieldsets = [
        (None, {"fields": ["name", "key", "allowed_origins", "embed_snippet", "usage"]}),
        ("Assistant", {"fields": ["system_prompt", "max_reply_tokens", "max_message_length"]}),
        ("Appearance", {"fields": ["title", "greeting", "color", "avatar_url", "position", "starter_questions"]}),
        ("Agents", {"fields": ["handoff_timeout", "identity_secret", "clear_identity_secret"]}),
    ]

    def get_queryset(self, request):
        return access.filter_by_site(super().get_queryset(request), request.user, field="pk")

    @admin.display(description="Allowed origins")
    def origins(self, site: Site) -> str:
        return ", ".join(site.allowed_origins)

    @admin.display(description="Usage")
    def usage(self, site: Site) -> str:
        return usage_link(site)

    @admin.display(description="Embed snippet")
    def embed_snippet(self, site: Site) -> str:
        if not site.pk:
            return "Save the site to get its snippet."
        return format_html("<code>{}</code>", snippet(site))

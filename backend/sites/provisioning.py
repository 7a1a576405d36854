"""Create sites with their provider chain, validating everything before anything is written."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from backend.providers.models import ProviderConfig
from backend.quotas.models import SiteQuota
from backend.sites.models import Site


@dataclass
class ProviderSpec:
    kind: str
    base_url: str = ""
    model: str = ""
    api_key: str = ""
    purpose: str = ProviderConfig.Purpose.CHAT


@dataclass
class SiteSpec:
    name: str
    origins: list[str]
    providers: list[ProviderSpec] = field(default_factory=list)
    options: dict = field(default_factory=dict)  # other Site fields, such as greeting
    quota: dict = field(default_factory=dict)  # SiteQuota fields, such as daily_cost_cap


def snippet(site: Site, server: str | None = None) -> str:
    server = (server or settings.PUBLIC_URL).rstrip("/")
    return f'<script src="{server}/widget.js" data-site="{site.key}" async></script>'


def create_site(spec: SiteSpec) -> Site:
    """Validate the whole spec, then create the site and its providers in one transaction."""
    site = Site(name=spec.name, allowed_origins=list(spec.origins), **spec.options)
    site.full_clean()
    configs = []
    for position, provider in enumerate(spec.providers):
        config = ProviderConfig(
            site=site,
            purpose=provider.purpose,
            position=position,
            kind=provider.kind,
            base_url=provider.base_url,
            model=provider.model,
            api_key=provider.api_key,
        )
        config.full_clean(exclude=["site"])
        configs.append(config)
    quota = SiteQuota(**spec.quota)
    quota.full_clean(exclude=["site"], validate_unique=False)
    with transaction.atomic():
        site.save()
        for config in configs:
            config.site = site
            config.save()
        if spec.quota:
            quota.site = site
            quota.save()
    return site


def validation_message(error: ValidationError) -> str:
    """Flatten a ValidationError into one readable line for a terminal."""
    if hasattr(error, "message_dict"):
        return "; ".join(f"{name}: {' '.join(msgs)}" for name, msgs in error.message_dict.items())
    return " ".join(error.messages)

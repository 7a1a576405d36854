"""Create sites with their provider chain, validating everything before anything is written."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from backend.providers.models import ProviderConfig
from backend.providers.presets import get_preset
from backend.quotas.models import SiteQuota
from backend.sites.models import Site


@dataclass
class ProviderSpec:
    kind: str
    base_url: str = ""
    model: str = ""
    api_key: str = ""
    purpose: str = ProviderConfig.Purpose.CHAT
    connect_timeout: float | None = None
    first_byte_timeout: float | None = None
    idle_timeout: float | None = None


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
    positions: dict[str, int] = {}
    for provider in spec.providers:
        position = positions[provider.purpose] = positions.get(provider.purpose, -1) + 1
        config = ProviderConfig(
            site=site,
            purpose=provider.purpose,
            position=position,
            kind=provider.kind,
            base_url=provider.base_url,
            model=provider.model,
            api_key=provider.api_key,
            connect_timeout=provider.connect_timeout,
            first_byte_timeout=provider.first_byte_timeout,
            idle_timeout=provider.idle_timeout,
        )
        try:
            config.full_clean(exclude=["site"])
        except ValidationError as error:
            # Name the provider: a chain may hold several of one kind.
            raise ValidationError(
                f"{provider.purpose} provider {position + 1} ({provider.kind}): {validation_message(error)}"
            ) from None
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


SPEC_FIELDS = {"model", "base_url", "api_key", "api_key_env", "connect_timeout", "first_byte_timeout", "idle_timeout"}


def parse_provider_spec(text: str, purpose: str = ProviderConfig.Purpose.CHAT) -> ProviderSpec:
    """Parse `KIND[,model=M][,base_url=URL][,api_key=K|api_key_env=VAR][,idle_timeout=S]…` from a command line."""
    kind, *items = [part.strip() for part in text.split(",")]
    if not kind:
        raise ValueError(f"{text!r} does not start with a provider kind, such as anthropic,model=claude-haiku-4-5")
    get_preset(kind)  # an unknown kind fails here, listing the known ones
    spec = ProviderSpec(kind=kind, purpose=purpose)
    seen: set[str] = set()
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in SPEC_FIELDS:
            allowed = ", ".join(sorted(SPEC_FIELDS))
            raise ValueError(f"{item!r} in {kind!r} is not NAME=VALUE with NAME one of: {allowed}")
        if name in seen or (name.startswith("api_key") and seen & {"api_key", "api_key_env"}):
            raise ValueError(f"{name} is given twice for {kind!r}")
        seen.add(name)
        if name == "api_key_env":
            if not os.environ.get(value):
                raise ValueError(f"the environment variable {value!r} (the {kind} key) is not set")
            spec.api_key = os.environ[value]
        elif name.endswith("_timeout"):
            try:
                setattr(spec, name, float(value))
            except ValueError:
                raise ValueError(f"{name} for {kind!r} must be a number of seconds, got {value!r}") from None
        else:
            setattr(spec, name, value.strip())
    return spec

from __future__ import annotations

import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from backend.providers.presets import PRESETS
from backend.quotas.caps import parse_quota_options
from backend.sites.provisioning import (
    ProviderSpec,
    SiteSpec,
    create_site,
    parse_provider_spec,
    snippet,
    validation_message,
)


class Command(BaseCommand):
    help = "Create a site and print its key, webhook secret and embed snippet as one JSON object."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--origin", action="append", required=True, help="an allowed origin; repeat for more")
        parser.add_argument("--provider", choices=sorted(PRESETS), help="provider kind for chat")
        parser.add_argument("--base-url", default="")
        parser.add_argument("--api-key", default="")
        parser.add_argument("--model", default="")
        parser.add_argument(
            "--fallback",
            action="append",
            default=[],
            metavar="KIND[,model=M][,base_url=URL][,api_key=K|api_key_env=VAR]",
            help="a chat provider tried when the ones before it fail; repeat for more, in order",
        )
        parser.add_argument(
            "--summary",
            action="append",
            default=[],
            metavar="KIND[,model=M][,base_url=URL][,api_key=K|api_key_env=VAR]",
            help="a provider for conversation summaries; repeat for fallbacks (default: the chat chain)",
        )
        parser.add_argument("--system-prompt")
        parser.add_argument("--greeting")
        parser.add_argument("--max-reply-tokens", type=int)
        parser.add_argument("--daily-token-cap", help="most tokens a day (blank: no cap)")
        parser.add_argument("--monthly-token-cap", help="most tokens a month")
        parser.add_argument("--daily-cost-cap", help="most USD a day, such as 5 or 2.50")
        parser.add_argument("--monthly-cost-cap", help="most USD a month")
        parser.add_argument("--timezone", help="time zone of the cap periods, such as Europe/Paris (default UTC)")
        parser.add_argument("--server", help="public URL of this server for the snippet (default: PUBLIC_URL)")

    def handle(self, *args, **options) -> None:
        if not options["provider"] and (options["api_key"] or options["base_url"] or options["model"]):
            raise CommandError("--api-key, --base-url and --model need --provider")
        if not options["provider"] and options["fallback"]:
            raise CommandError("--fallback needs --provider (the first chat provider)")
        site_options = {
            field: options[field]
            for field in ("system_prompt", "greeting", "max_reply_tokens")
            if options[field] is not None
        }
        providers = []
        if options["provider"]:
            providers.append(
                ProviderSpec(
                    kind=options["provider"],
                    base_url=options["base_url"],
                    model=options["model"],
                    api_key=options["api_key"],
                )
            )
        try:
            providers += [parse_provider_spec(text, "chat") for text in options["fallback"]]
            providers += [parse_provider_spec(text, "summary") for text in options["summary"]]
        except ValueError as error:
            raise CommandError(str(error)) from None
        spec = SiteSpec(name=options["name"], origins=options["origin"], providers=providers, options=site_options)
        try:
            spec.quota = parse_quota_options(options)
            site = create_site(spec)
        except ValidationError as error:
            raise CommandError(validation_message(error)) from None
        output = {"key": site.key, "webhook_secret": site.webhook_secret, "snippet": snippet(site, options["server"])}
        self.stdout.write(json.dumps(output))

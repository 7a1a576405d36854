from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from backend.kb.embeddings import embed_passages
from backend.kb.importer import import_paths
from backend.providers.base import ProviderError
from backend.sites.models import Site


class Command(BaseCommand):
    help = (
        "Import help articles (.md, .markdown, .html, .htm, .txt files, or folders of them) into a site. "
        "Put options first and `--` before a site key that starts with '-'."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("site_key", help="the site's key, as `python manage.py sites` lists it")
        parser.add_argument("paths", nargs="+", help="files and folders (folders are read recursively)")
        parser.add_argument(
            "--base-url", default="", help="resolve relative `url:` values of the front matter against this URL"
        )

    def handle(self, *args, site_key: str, paths: list[str], base_url: str, **options) -> None:
        site = Site.objects.filter(key=site_key).first()
        if site is None:
            raise CommandError(f"No site has the key {site_key!r} (see `python manage.py sites`).")
        missing = [p for p in paths if not Path(p).exists()]
        if missing:
            raise CommandError("No such file or folder: " + ", ".join(missing) + ". Nothing was imported.")
        report = import_paths(site, [Path(p) for p in paths], base_url=base_url)
        for name, reason in report.failed:
            self.stderr.write(f"skipped {name}: {reason}")
        try:
            embedded = embed_passages(site.pk)
        except ProviderError as error:
            self.stderr.write(f"articles imported, but embeddings failed: {error.message}")
        else:
            if embedded:
                self.stdout.write(f"Embedded {embedded} passages.")
        self.stdout.write(f"{report.summary()} for site {site.name!r}.")
        if report.failed:
            raise CommandError(f"{len(report.failed)} file(s) could not be imported (named above).")

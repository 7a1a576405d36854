"""Import help articles from Markdown, HTML and text files, one file per transaction."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin

import yaml
from django.core.exceptions import ValidationError
from django.db import DatabaseError, transaction
from frontmatter.default_handlers import YAMLHandler

from backend.kb import text as kbtext
from backend.kb.models import Article
from backend.sites.models import Site

log = logging.getLogger(__name__)

FORMATS = {
    ".md": Article.Format.MARKDOWN,
    ".markdown": Article.Format.MARKDOWN,
    ".html": Article.Format.HTML,
    ".htm": Article.Format.HTML,
    ".txt": Article.Format.TEXT,
}


MAX_FILE_BYTES = 5 * 1024 * 1024  # a help article, not a book: larger files are refused


class BadFile(Exception):
    """A file that cannot become an article; the message says why, for the person importing."""


@dataclass
class Report:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def summary(self) -> str:
        return (
            f"{len(self.created)} created, {len(self.updated)} updated, {len(self.unchanged)} unchanged, "
            f"{len(self.failed)} skipped"
        )


@dataclass(frozen=True)
class Parsed:
    title: str
    url: str
    body: str
    format: str


def find_files(paths: list[Path]) -> list[Path]:
    """Expand folders recursively (skipping hidden entries); keep files given by name as they are."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                relative = child.relative_to(path).parts
                if child.is_file() and not any(part.startswith(".") for part in relative):
                    found.append(child)
        else:
            found.append(path)
    return found


def read_front_matter(text: str) -> tuple[dict, str]:
    """Split YAML front matter ("---" lines) from the content; broken or non-mapping front matter is an error."""
    handler = YAMLHandler()
    if not handler.detect(text):
        return {}, text
    try:
        front, content = handler.split(text)
        meta = handler.load(front)
    except (yaml.YAMLError, ValueError) as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise BadFile(f"broken front matter: {first_line}") from None
    if meta is None:
        return {}, content
    if not isinstance(meta, dict):
        raise BadFile("broken front matter: expected `key: value` lines")
    return meta, content


def parse_file(path: Path, base_url: str = "") -> Parsed:
    """Read one file into an article's fields, or raise BadFile saying what is wrong with it."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise BadFile(f"unsupported file type {path.suffix or '(none)'!r} (use .md, .markdown, .html, .htm or .txt)")
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise BadFile(f"too large ({path.stat().st_size:,} bytes; the limit is {MAX_FILE_BYTES:,})")
        raw = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise BadFile(f"not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise BadFile(f"cannot be read ({error.strerror})") from None
    meta, content = read_front_matter(kbtext.clean(raw))
    title = ""
    url = ""
    if fmt == Article.Format.HTML:
        document = kbtext.html_to_text(content)
        content, title, url = document.text, document.title, document.canonical
    elif fmt == Article.Format.MARKDOWN:
        title = kbtext.first_heading(content)
    if not content.strip():
        raise BadFile("empty: no text to import")
    if meta.get("title") is not None:
        title = str(meta["title"]).strip()
    if meta.get("url") is not None:
        url = str(meta["url"]).strip()
    title = title or path.stem.replace("-", " ").replace("_", " ").strip().capitalize()
    if url and base_url:
        url = urljoin(base_url.rstrip("/") + "/", url)
    return Parsed(title=title[:300], url=url, body=content.strip(), format=fmt)


def import_file(site: Site, path: Path, source_path: str, base_url: str = "") -> str:
    """Create or update the article from one file atomically; return "created", "updated" or "unchanged"."""
    parsed = parse_file(path, base_url)
    article = Article.objects.filter(site=site, source_path=source_path).first()
    state = "updated"
    if article is None:
        article, state = Article(site=site, source_path=source_path), "created"
    elif (article.title, article.url, article.body, article.format) == (
        parsed.title,
        parsed.url,
        kbtext.clean(parsed.body),
        parsed.format,
    ):
        return "unchanged"
    article.title, article.url, article.body, article.format = parsed.title, parsed.url, parsed.body, parsed.format
    try:
        article.full_clean(exclude=["site"])
    except ValidationError as error:
        reasons = "; ".join(f"{name}: {' '.join(msgs)}" for name, msgs in error.message_dict.items())
        raise BadFile(reasons) from None
    with transaction.atomic():
        article.save()
    return state


def import_paths(site: Site, paths: list[Path], base_url: str = "", source_prefix: str = "") -> Report:
    """Import every supported file under the paths; each file commits alone or not at all.

    An article remembers where it came from (the absolute path, or source_prefix plus the path relative
    to the folder given), so importing the same file again updates it.
    """
    report = Report()
    for root in paths:
        for path in find_files([root]):
            name = str(path)
            if source_prefix:
                relative = path.relative_to(root) if root.is_dir() else Path(path.name)
                source_path = source_prefix + relative.as_posix()
            else:
                source_path = str(path.resolve())
            try:
                state = import_file(site, path, source_path, base_url)
            except BadFile as error:
                report.failed.append((name, str(error)))
                continue
            except DatabaseError as error:
                # The file's transaction rolled back: its article and passages are as they were.
                log.warning("importing %s failed in the database: %s", name, type(error).__name__)
                report.failed.append((name, f"database error ({type(error).__name__}); nothing was imported"))
                continue
            getattr(report, state).append(name)
    return report

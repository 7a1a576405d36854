from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models, transaction

from backend.kb import text as kbtext
from backend.sites.crypto import EncryptedTextField

# The help centre about Parley itself, which the demo site answers from.
CORPUS_DIR = Path(__file__).resolve().parent / "corpus"


def validate_article_url(value: str) -> None:
    """Accept absolute http(s) URLs and site-relative paths: anything else could become a hostile link."""
    parts = urlsplit(value)
    if value.startswith("/") and not value.startswith("//"):
        return
    if parts.scheme in ("http", "https") and parts.hostname:
        return
    raise ValidationError(f"{value!r} is not an http(s) URL or a path starting with /")


class Article(models.Model):
    """A help-centre article of one site; its passages are what retrieval searches."""

    class Format(models.TextChoices):
        MARKDOWN = "markdown", "Markdown"
        HTML = "html", "HTML"
        TEXT = "text", "Plain text"

    site = models.ForeignKey("sites.Site", on_delete=models.CASCADE, related_name="articles")
    title = models.CharField(max_length=300)
    url = models.CharField(
        max_length=1000, blank=True, validators=[validate_article_url], help_text="Where visitors can read it"
    )
    # HTML is reduced to its text (headings kept as Markdown "#" lines) before it is stored, so no
    # untrusted markup is ever kept or rendered; `format` records what the source was.
    body = models.TextField()
    format = models.CharField(max_length=10, choices=Format.choices, default=Format.MARKDOWN)
    source_path = models.CharField(
        max_length=1000, blank=True, default="", help_text="The file it was imported from; re-imports update it"
    )
    updated = models.DateTimeField(auto_now=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["site", "title"]
        constraints = [
            models.UniqueConstraint(
                fields=["site", "source_path"],
                condition=~models.Q(source_path=""),
                name="kb_unique_source_path_per_site",
            )
        ]

    def __str__(self) -> str:
        return self.title

    def save(self, *args, **kwargs) -> None:
        """Save the article and re-split its passages in one transaction."""
        self.body = kbtext.clean(self.body)
        with transaction.atomic():
            super().save(*args, **kwargs)
            self.split()

    def split(self) -> list[Passage]:
        """Replace this article's passages with a fresh split of its body."""
        self.passages.all().delete()
        chunks = kbtext.chunks(self.body, self.title, settings.KB_PASSAGE_CHARS)
        return Passage.objects.bulk_create(
            Passage(
                article=self,
                site_id=self.site_id,
                position=position,
                title=self.title,
                heading=chunk.heading,
                text=chunk.text,
            )
            for position, chunk in enumerate(chunks)
        )


class Passage(models.Model):
    """A retrievable piece of an article: one section, or a window of a long one.

    On SQLite the FTS5 table kb_passage_fts mirrors title, heading and text through triggers; on
    PostgreSQL a GIN index covers the same columns' tsvector (both created by migration 0002).
    """

    article = models.ForeignKey(Article, on_delete=models.CASCADE, related_name="passages")
    site = models.ForeignKey("sites.Site", on_delete=models.CASCADE, related_name="+")
    position = models.PositiveIntegerField()
    title = models.CharField(max_length=300)
    heading = models.CharField(max_length=300, blank=True)
    text = models.TextField()
    embedding = models.JSONField(null=True, blank=True)
    embedding_model = models.CharField(max_length=300, blank=True, help_text="kind:model that made the embedding")

    class Meta:
        ordering = ["article", "position"]
        indexes = [models.Index(fields=["site", "embedding_model"])]

    def __str__(self) -> str:
        return f"{self.title} › {self.heading}" if self.heading else self.title


class KnowledgeSettings(models.Model):
    """A site's retrieval options: semantic search through an embeddings endpoint, off by default."""

    class Kind(models.TextChoices):
        OPENAI = "openai", "OpenAI-compatible /embeddings"
        GEMINI = "gemini", "Gemini :embedContent"
        OLLAMA = "ollama", "Ollama /api/embed"

    site = models.OneToOneField("sites.Site", on_delete=models.CASCADE, related_name="knowledge")
    use_embeddings = models.BooleanField(
        default=False, help_text="Mix semantic similarity from an embeddings endpoint with the full-text rank"
    )
    embedding_kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.OPENAI)
    embedding_base_url = models.CharField(max_length=500, blank=True, help_text="Leave blank for the kind's default")
    embedding_model = models.CharField(max_length=200, blank=True, help_text="Leave blank for the kind's default")
    embedding_api_key = EncryptedTextField(
        blank=True, help_text="Leave blank to use the key of the site's chat provider of the same kind"
    )

    class Meta:
        verbose_name = "knowledge settings"
        verbose_name_plural = "knowledge settings"

    def __str__(self) -> str:
        return f"Knowledge settings of {self.site}"

    def clean(self) -> None:
        super().clean()
        if self.embedding_base_url:
            parts = urlsplit(self.embedding_base_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValidationError({"embedding_base_url": "Use an http:// or https:// URL with a host"})

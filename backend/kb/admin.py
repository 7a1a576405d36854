from __future__ import annotations

import logging

from django import forms
from django.contrib import admin, messages
from django.db.models import Count
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from backend.agents.scoping import SiteScopedMixin
from backend.kb import text as kbtext
from backend.kb.embeddings import embed_passages
from backend.kb.models import Article, KnowledgeSettings
from backend.providers.base import ProviderError
from backend.sites.forms import WriteOnlySecretsForm, secret_input

log = logging.getLogger(__name__)


class ArticleForm(forms.ModelForm):
    class Meta:
        model = Article
        fields = ["site", "title", "url", "format", "body", "source_path"]

    def clean(self) -> dict:
        data = super().clean()
        # Pasted HTML is reduced to its text here, so no untrusted markup is stored.
        if data.get("format") == Article.Format.HTML and data.get("body"):
            data["body"] = kbtext.html_to_text(data["body"]).text
            if not data["body"].strip():
                self.add_error("body", "This HTML has no text to keep.")
        return data


@admin.register(Article)
class ArticleAdmin(SiteScopedMixin, admin.ModelAdmin):
    form = ArticleForm
    list_display = ["title", "site", "format", "url", "passage_count", "updated"]
    list_filter = ["site", "format"]
    search_fields = ["title", "body", "url"]
    readonly_fields = ["passage_list", "updated", "created"]

    def get_queryset(self, request: HttpRequest):
        return super().get_queryset(request).annotate(passage_total=Count("passages"))

    @admin.display(description="Passages", ordering="passage_total")
    def passage_count(self, article: Article) -> int:
        return article.passage_total

    @admin.display(description="Passages (re-split on save)")
    def passage_list(self, article: Article) -> str:
        rows = [(p.position, p.heading or "(intro)", p.text[:300]) for p in article.passages.all()]
        if not rows:
            return "None yet."
        return format_html("<ol>{}</ol>", format_html_join("", "<li value='{}'><strong>{}</strong>: {}</li>", rows))

    def save_model(self, request: HttpRequest, obj: Article, form, change: bool) -> None:
        super().save_model(request, obj, form, change)  # Article.save re-splits the passages
        try:
            embed_passages(obj.site_id)
        except ProviderError as error:
            messages.warning(request, f"Saved, but the passages could not be embedded: {error.message}")


class KnowledgeSettingsForm(WriteOnlySecretsForm):
    """Edit the embeddings key write-only, like provider keys."""

    secret_fields = {"embedding_api_key": "key"}
    embedding_api_key = secret_input(
        help_text="Leave blank to keep the stored key (or to use the chat provider's key of the same kind)."
    )
    clear_embedding_api_key = forms.BooleanField(required=False, label="Remove the stored key")

    class Meta:
        model = KnowledgeSettings
        fields = [
            "site",
            "use_embeddings",
            "embedding_kind",
            "embedding_base_url",
            "embedding_model",
            "embedding_api_key",
        ]


@admin.register(KnowledgeSettings)
class KnowledgeSettingsAdmin(SiteScopedMixin, admin.ModelAdmin):
    form = KnowledgeSettingsForm
    list_display = ["site", "use_embeddings", "embedding_kind", "embedding_model"]
    fields = [
        "site",
        "use_embeddings",
        "embedding_kind",
        "embedding_base_url",
        "embedding_model",
        "embedding_api_key",
        "clear_embedding_api_key",
    ]

    def save_model(self, request: HttpRequest, obj: KnowledgeSettings, form, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if obj.use_embeddings:
            try:
                count = embed_passages(obj.site_id)
            except ProviderError as error:
                messages.warning(request, f"Saved, but the passages could not be embedded: {error.message}")
            else:
                messages.info(request, f"Embedded {count} passages.")

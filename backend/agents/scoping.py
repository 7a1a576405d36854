"""Site scoping for other apps' admin pages: agents see and act on their sites' rows only."""

from __future__ import annotations

from typing import Any

from django.contrib.admin.utils import unquote
from django.db.models import QuerySet
from django.http import Http404, HttpRequest

from backend.agents import access
from backend.sites.models import Site


class SiteScopedMixin:
    """Mix into a ModelAdmin whose model has a `site` foreign key (or set site_field to a path to one).

    Lists, object pages and actions all go through get_queryset; another site's object is a 404 (not the
    stock redirect, which would tell an agent it exists); `site` choices and the site filter list only the
    user's sites.
    """

    site_field = "site"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return access.filter_by_site(super().get_queryset(request), request.user, self.site_field)

    def get_list_filter(self, request: HttpRequest) -> list:
        from backend.chat.admin import SiteFilter

        return [SiteFilter if name == "site" else name for name in super().get_list_filter(request)]

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "site" and db_field.related_model is Site:
            kwargs["queryset"] = access.filter_by_site(Site.objects.all(), request.user, field="pk")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None) -> Any:
        if self.get_object(request, unquote(object_id)) is None:
            raise Http404("No such object.")
        return super().change_view(request, object_id, form_url, extra_context)

    def delete_view(self, request: HttpRequest, object_id: str, extra_context: Any = None) -> Any:
        if self.get_object(request, unquote(object_id)) is None:
            raise Http404("No such object.")
        return super().delete_view(request, object_id, extra_context)

    def history_view(self, request: HttpRequest, object_id: str, extra_context: Any = None) -> Any:
        if self.get_object(request, unquote(object_id)) is None:
            raise Http404("No such object.")
        return super().history_view(request, object_id, extra_context)

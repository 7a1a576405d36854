from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import get_user_model

from backend.agents.models import Assignment


class AssignmentInline(admin.TabularInline):
    """The staff users who answer this site's conversations."""

    model = Assignment
    extra = 0
    verbose_name = "agent"
    verbose_name_plural = "agents (staff users who answer this site's conversations)"
    autocomplete_fields: list[str] = []

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "user":
            kwargs["queryset"] = get_user_model().objects.filter(is_staff=True, is_active=True)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

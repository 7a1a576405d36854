"""Who may see what: agents act on their assigned sites only; superusers on every site."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from backend.agents.models import Assignment


def is_agent(user: Any) -> bool:
    return bool(user and user.is_authenticated and user.is_active and user.is_staff)


def site_ids(user: Any) -> list[int] | None:
    """Return the ids of the sites the user may act on, or None for every site (superusers)."""
    if not is_agent(user):
        return []
    if user.is_superuser:
        return None
    return list(Assignment.objects.filter(user=user).values_list("site_id", flat=True))


def filter_by_site(queryset: QuerySet, user: Any, field: str = "site") -> QuerySet:
    """Restrict a queryset to the user's sites through `field` (a path to a Site foreign key)."""
    ids = site_ids(user)
    if ids is None:
        return queryset
    return queryset.filter(**{f"{field}__in": ids})


def can_act_on_site(user: Any, site_id: int) -> bool:
    ids = site_ids(user)
    return ids is None or site_id in ids


def display_name(user: Any) -> str:
    """Return the name a visitor sees on an agent's messages."""
    return (user.get_full_name() or user.get_username()).strip()

from __future__ import annotations

from django.conf import settings
from django.db import models


class Assignment(models.Model):
    """A staff user who answers one site's conversations (an agent may serve several sites)."""

    site = models.ForeignKey("sites.Site", on_delete=models.CASCADE, related_name="agent_assignments")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="agent_assignments")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["site", "user"], name="unique_agent_per_site")]
        verbose_name = "agent"

    def __str__(self) -> str:
        return f"{self.user} on {self.site}"

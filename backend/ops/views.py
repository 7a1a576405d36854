from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache

from backend.ops import health


@never_cache
async def healthz(request: HttpRequest) -> JsonResponse:
    """Report the database, channel layer and broker: 200 when all answer, 503 when one does not."""
    healthy, checks = await health.report()
    return JsonResponse(
        {"status": "ok" if healthy else "unavailable", "checks": checks}, status=200 if healthy else 503
    )

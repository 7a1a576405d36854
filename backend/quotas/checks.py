"""`manage.py check --deploy`: the Redis that holds the quota ledger must not evict its keys.

A period's totals and the holds of replies in progress live only in Redis (docs/quotas.md). A Redis
that evicts keys under memory pressure would drop them, and caps could then be overshot.
"""

from __future__ import annotations

from typing import Any

import redis
from django.conf import settings
from django.core import checks

from backend.ops.redis_client import redis_client


@checks.register(checks.Tags.database, deploy=True)
def redis_keeps_the_quota_ledger(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    if settings.QUOTA_LEDGER != "redis":
        return []
    try:
        policy = redis_client().config_get("maxmemory-policy").get("maxmemory-policy")
    except redis.ResponseError:
        # Managed Redis services often disable CONFIG: say what to check by hand.
        return [
            checks.Info(
                "Could not read Redis's maxmemory-policy (CONFIG is disabled on this server).",
                hint="Make sure it is noeviction, so that quota totals and holds are never evicted.",
                id="parley.I001",
            )
        ]
    except redis.RedisError:
        return []  # Redis is down: /healthz reports it, and this check cannot tell anything more
    if policy != "noeviction":
        return [
            checks.Warning(
                f"Redis's maxmemory-policy is {policy}: under memory pressure it may evict quota totals and "
                "holds, and budget caps could then be overshot.",
                hint="Set maxmemory-policy noeviction on the Redis of REDIS_URL (docs/quotas.md).",
                id="parley.W001",
            )
        ]
    return []

"""`check --deploy` warns when the Redis holding the quota ledger may evict it (runs with REDIS_URL)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from backend.ops.redis_client import redis_client
from backend.quotas.checks import redis_keeps_the_quota_ledger

pytestmark = pytest.mark.skipif(not django_settings.REDIS_URL, reason="needs REDIS_URL (run `make test-services`)")


@contextlib.contextmanager
def eviction_policy(policy: str) -> Iterator[None]:
    client = redis_client()
    before = client.config_get("maxmemory-policy")["maxmemory-policy"]
    client.config_set("maxmemory-policy", policy)
    try:
        yield
    finally:
        client.config_set("maxmemory-policy", before)


def test_a_redis_that_keeps_its_keys_passes():
    with eviction_policy("noeviction"):
        assert redis_keeps_the_quota_ledger() == []


def test_an_evicting_redis_is_a_deploy_warning_that_names_the_policy_and_the_fix():
    with eviction_policy("volatile-lru"):
        [warning] = redis_keeps_the_quota_ledger()
        assert warning.id == "parley.W001" and "volatile-lru" in warning.msg
        assert "noeviction" in warning.hint
        with pytest.raises(SystemCheckError, match="parley.W001"):
            call_command("check", deploy=True, fail_level="WARNING", tags=["database"])


def test_with_the_database_ledger_redis_is_not_asked(settings):
    settings.QUOTA_LEDGER = "database"
    with eviction_policy("allkeys-lru"):
        assert redis_keeps_the_quota_ledger() == []

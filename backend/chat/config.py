"""What a chat connection keeps between replies: the site, its quota settings and its priced endpoints.

Reading these for every reply would cost the database three queries before each provider call. A
connection keeps them instead, with the site's `config_stamp`, which every reply reads anyway with the
history (one query, services.prepare_reply); the configuration is read again only when the stamp changed.
The receivers below renew the stamp whenever something that configures replies is saved or deleted, in
whichever process that happens, so no connection answers with settings older than its next message.

Connections of one site in one process share what they read (`reply_config`): a new connection has just
read the site's row, stamp included, so it reuses the configuration read under that stamp. Reading it
anew cost each connection about 4 ms of CPU (docs/benchmarks.md), which arrivals in bursts queue behind.
Every use checks the stamp read from the database, so the processes never need to agree on this cache.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import redis
from django.db.models.signals import post_delete, post_save

from backend.ops.redis_client import redis_client
from backend.providers.base import Endpoint
from backend.providers.models import Price, ProviderConfig
from backend.quotas import ledger
from backend.quotas.models import SiteQuota
from backend.quotas.services import reserves_in_scripts
from backend.sites.models import Site


@dataclass(frozen=True)
class ReplyConfig:
    stamp: uuid.UUID
    site: Site
    quota: SiteQuota
    endpoints: list[tuple[Endpoint, tuple[Decimal, Decimal] | None]]  # each with its price, None if unknown

    def chain(self) -> tuple[list[Endpoint], list[tuple[Decimal, Decimal] | None]]:
        """The endpoints in order and their prices in the same order, as the quota services take them."""
        return [endpoint for endpoint, _ in self.endpoints], [price for _, price in self.endpoints]


def load_reply_config(site: Site | int) -> ReplyConfig:
    """Read the configuration of a site, given as a row just read or by its id."""
    from backend.chat.services import priced_chat_endpoints
    from backend.quotas.services import get_quota

    if not isinstance(site, Site):
        site = Site.objects.get(pk=site)
    return ReplyConfig(site.config_stamp, site, get_quota(site.pk), priced_chat_endpoints(site))


# Site id -> the configuration last read in this process; bounded, the oldest read dropped first.
_shared: dict[int, ReplyConfig] = {}
_shared_lock = threading.Lock()
SHARED_SITES = 1000


def reply_config(site: Site | int, stamp: uuid.UUID) -> ReplyConfig:
    """The configuration of a site whose stamp was just read: shared in the process while the stamp holds."""
    site_id = site if isinstance(site, int) else site.pk
    config = _shared.get(site_id)
    if config is None or config.stamp != stamp:
        config = load_reply_config(site)
        with _shared_lock:  # connections of many sites read in parallel worker threads
            _shared.pop(site_id, None)
            if len(_shared) >= SHARED_SITES:
                _shared.pop(next(iter(_shared)))
            _shared[site_id] = config
    return config


def renew_stamp(site_id: int | None) -> None:
    """Make every connection of the site (of every site when None) read its configuration again.

    With the Redis ledger, the new stamp is also written to Redis, where the reply claim's script compares
    it with the connection's (backend/ops/claims.py): a connection calls a provider before reading the
    history only under the configuration that holds, so its quota hold was checked against the caps and
    prices that hold. Failing to write it fails the save (in the admin's transaction): no process may go on
    guessing under a configuration that changed.
    """
    stamp = uuid.uuid4()
    sites = Site.objects.all() if site_id is None else Site.objects.filter(pk=site_id)
    sites.update(config_stamp=stamp)
    if (client := stamp_client()) is not None:
        ids = [site_id] if site_id is not None else list(Site.objects.values_list("pk", flat=True))
        pipeline = client.pipeline(transaction=False)
        for pk in ids:
            pipeline.set(stamp_key(pk), str(stamp), ex=STAMP_SECONDS)
        pipeline.execute()


# How long a stamp stays in Redis: a stamp left wrong there (a renewal whose transaction rolled back after
# writing it) only stops the site's connections from calling before they read, and not for longer than this.
STAMP_SECONDS = 3600


def stamp_client() -> redis.Redis | None:
    """The Redis client that keeps the configuration stamps, or None where nothing compares them: only the
    Redis ledger's claim script does (a connection guesses only where it reserves in that script)."""
    return redis_client() if reserves_in_scripts() else None


def stamp_key(site_id: int) -> str:
    """The Redis key of the site's configuration stamp, for the reply claim's script to compare."""
    return f"{ledger.redis_prefix()}stamp:{site_id}"


def remember_stamp(site_id: int, stamp: uuid.UUID) -> None:
    """Write a stamp just read from the site's row to Redis, unless one is there: a renewal, which writes its
    own, may be committed after this read."""
    if (client := stamp_client()) is not None:
        client.set(stamp_key(site_id), str(stamp), ex=STAMP_SECONDS, nx=True)


def _site_changed(sender: Any, instance: Site, **kwargs: Any) -> None:
    renew_stamp(instance.pk)


def _part_changed(sender: Any, instance: ProviderConfig | SiteQuota, **kwargs: Any) -> None:
    # A quota row is created with its defaults the first time a site is used (quotas.get_quota), which
    # changes nothing a connection holds; an edit afterwards is an update.
    if sender is SiteQuota and kwargs.get("created"):
        return
    renew_stamp(instance.site_id)


def _price_changed(sender: Any, instance: Price, **kwargs: Any) -> None:
    renew_stamp(None)  # prices are shared by every site using the model


def connect_receivers() -> None:
    """Called once from ChatConfig.ready()."""
    post_save.connect(_site_changed, sender=Site, dispatch_uid="chat.config.site")
    for model in (ProviderConfig, SiteQuota):
        post_save.connect(_part_changed, sender=model, dispatch_uid=f"chat.config.{model.__name__}.save")
        post_delete.connect(_part_changed, sender=model, dispatch_uid=f"chat.config.{model.__name__}.delete")
    post_save.connect(_price_changed, sender=Price, dispatch_uid="chat.config.price.save")
    post_delete.connect(_price_changed, sender=Price, dispatch_uid="chat.config.price.delete")

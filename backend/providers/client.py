"""One shared httpx.AsyncClient per event loop, so connections to providers are reused."""

from __future__ import annotations

import asyncio
import weakref
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import NamedTuple

import httpx

from backend.providers.network import AsyncioBackend


class Shared(NamedTuple):
    client: httpx.AsyncClient
    transport: httpx.AsyncHTTPTransport  # the client's own: its connection pool
    headers: dict[str, str]  # the client's default headers (User-Agent and the like), names in lower case


_shared: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Shared] = weakref.WeakKeyDictionary()


def transport(**options: object) -> httpx.AsyncHTTPTransport:
    """httpx's transport, with httpcore's connections on plain asyncio streams (backend/providers/network.py)."""
    made = httpx.AsyncHTTPTransport(**options)
    # httpx does not pass a network backend through; the pool reads this attribute for each new connection.
    assert hasattr(made._pool, "_network_backend"), "httpcore changed: see backend/providers/network.py"
    made._pool._network_backend = AsyncioBackend()
    return made


def get_client() -> httpx.AsyncClient:
    return shared().client


def shared() -> Shared:
    """This event loop's client, with its transport for the streamed calls that skip the client's layers
    (backend/providers/http.py's open_stream)."""
    loop = asyncio.get_running_loop()
    made = _shared.get(loop)
    if made is None or made.client.is_closed:
        pool = transport(limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100))
        client = httpx.AsyncClient(
            # Per-phase timeouts are enforced by the adapters; this is only the outer guard.
            timeout=httpx.Timeout(connect=30.0, read=None, write=30.0, pool=30.0),
            transport=pool,
            follow_redirects=False,
            trust_env=False,
            # The client is shared by every site: a cookie one provider response sets (a CDN's, say) must
            # not ride along on another site's requests. A policy that allows no domain keeps the jar empty.
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        )
        made = _shared[loop] = Shared(client, pool, {name.lower(): value for name, value in client.headers.items()})
    return made

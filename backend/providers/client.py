"""One shared httpx.AsyncClient per event loop, so connections to providers are reused."""

from __future__ import annotations

import asyncio
import weakref
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx

from backend.providers.network import AsyncioBackend

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = weakref.WeakKeyDictionary()


def transport(**options: object) -> httpx.AsyncHTTPTransport:
    """httpx's transport, with httpcore's connections on plain asyncio streams (backend/providers/network.py)."""
    made = httpx.AsyncHTTPTransport(**options)
    # httpx does not pass a network backend through; the pool reads this attribute for each new connection.
    assert hasattr(made._pool, "_network_backend"), "httpcore changed: see backend/providers/network.py"
    made._pool._network_backend = AsyncioBackend()
    return made


def get_client() -> httpx.AsyncClient:
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        client = httpx.AsyncClient(
            # Per-phase timeouts are enforced by the adapters; this is only the outer guard.
            timeout=httpx.Timeout(connect=30.0, read=None, write=30.0, pool=30.0),
            transport=transport(limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100)),
            follow_redirects=False,
            trust_env=False,
            # The client is shared by every site: a cookie one provider response sets (a CDN's, say) must
            # not ride along on another site's requests. A policy that allows no domain keeps the jar empty.
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        )
        _clients[loop] = client
    return client

"""deploy/nginx.conf in a real nginx in front of two daphne processes: what docs/deploy.md promises of it.

nginx runs as this user on free ports, with the upstream lines pointed at the two processes. CI installs
nginx (.ci/run) and sets PARLEY_REQUIRE_NGINX, so there a missing nginx fails instead of skipping.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from tests.processes import ROOT, create_site, daphne, free_port, manage, server_env, wait_for_port

ORIGIN = "https://shop.example"

pytestmark = pytest.mark.skipif(
    not shutil.which("nginx") and not os.environ.get("PARLEY_REQUIRE_NGINX"), reason="nginx is not installed"
)


@contextlib.contextmanager
def nginx(folder: Path, upstreams: list[int]) -> Iterator[int]:
    """Run deploy/nginx.conf, unchanged but for its listen port and upstream addresses, until the block ends."""
    port = free_port()
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    conf = conf.replace("listen 80;", f"listen 127.0.0.1:{port};")
    conf = conf.replace("server web1:8000", f"server 127.0.0.1:{upstreams[0]}")
    conf = conf.replace("server web2:8000", f"server 127.0.0.1:{upstreams[1]}")
    (folder / "parley.conf").write_text(conf)
    main = folder / "nginx.conf"
    main.write_text(
        f"daemon off; pid {folder}/nginx.pid; error_log {folder}/error.log;\n"
        f"events {{}}\nhttp {{ access_log off; client_body_temp_path {folder}; proxy_temp_path {folder};\n"
        f"  include {folder}/parley.conf; }}\n"
    )
    process = subprocess.Popen(["nginx", "-c", str(main), "-p", str(folder)], stderr=subprocess.PIPE)
    try:
        wait_for_port(port)
        yield port
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def shop(tmp_path, fake_openai) -> tuple[dict[str, str], str]:
    env = server_env(f"sqlite:///{tmp_path / 'nginx.sqlite3'}")
    manage(env, "migrate", "--noinput", "-v0")
    return env, create_site(env, fake_openai.origin, origin=ORIGIN)


async def chat_through(port: int, site_key: str, text: str) -> dict:
    async with websockets.connect(
        f"ws://127.0.0.1:{port}/ws/chat/{site_key}/", origin=ORIGIN, ping_interval=None
    ) as ws:
        await ws.send(json.dumps({"type": "hello"}))
        assert json.loads(await ws.recv())["type"] == "ready"
        await ws.send(json.dumps({"type": "message", "id": "n1", "text": text}))
        deltas = []
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if frame["type"] == "delta":
                deltas.append(frame["text"])
            if frame["type"] in ("end", "error"):
                return frame | {"deltas": deltas}


def test_visitors_chat_through_nginx_and_it_passes_its_own_request_id(tmp_path, shop, fake_openai):
    env, site_key = shop
    with daphne(env) as first, daphne(env) as second, nginx(tmp_path, [first, second]) as port:
        end = asyncio.run(chat_through(port, site_key, "Hello through the proxy"))
        assert end["type"] == "end" and end["status"] == "complete"
        assert "".join(end["deltas"]) == end["text"] == "You said: Hello through the proxy"
        assert len(fake_openai.requests) == 1

        # nginx replaces a request id sent from outside with its own, which the app logs and echoes.
        ids = [
            httpx.get(f"http://127.0.0.1:{port}/healthz", headers={"X-Request-ID": "from-outside"}).headers[
                "X-Request-ID"
            ]
            for _ in range(2)
        ]
        assert "from-outside" not in ids and len(set(ids)) == 2
        assert all(len(value) == 32 and int(value, 16) >= 0 for value in ids)


def test_when_one_process_is_down_nginx_sends_visitors_to_the_other(tmp_path, shop):
    env, site_key = shop
    stopped = free_port()  # nothing listens here: a process that died
    with daphne(env) as alive, nginx(tmp_path, [stopped, alive]) as port:
        for number in range(3):
            end = asyncio.run(chat_through(port, site_key, f"Anyone there? {number}"))
            assert end["status"] == "complete", end
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200

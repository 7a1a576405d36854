"""Start the real server as a child process, for end-to-end and browser tests."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def server_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE",)}
    env.update({"DATABASE_URL": database_url, "DJANGO_SETTINGS_MODULE": "backend.settings", **extra})
    env.pop("REDIS_URL", None) if "REDIS_URL" not in extra else None
    return env


PROVIDER_KEY = "sk-test-site-key-1234"  # the provider key of sites made by create_site: it must never leak


def create_site(env: dict[str, str], provider_origin: str, *options: str, origin: str = "https://shop.example") -> str:
    """Make a site "Shop" with `manage.py createsite` in the server's database, answered by the fake OpenAI at
    provider_origin; return its key. `options` are more createsite options (caps, reply length)."""
    created = manage(
        env, "createsite", "Shop", "--origin", origin, "--provider", "openai",
        "--base-url", f"{provider_origin}/v1", "--api-key", PROVIDER_KEY, *options,
    )  # fmt: skip
    return json.loads(created)["key"]


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed: {result.stderr}")
    return result.stdout


@contextlib.contextmanager
def daphne(env: dict[str, str], port: int | None = None) -> Iterator[int]:
    """Run daphne with the app on a free port until the block ends."""
    port = port or free_port()
    # The server's log goes to a file, not a pipe nobody reads (a full pipe would stall the server); it is
    # printed when the server fails to start.
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "--websocket-max-message-size",
            "65536",
            "backend.asgi:application",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        try:
            wait_for_port(port)
        except TimeoutError:
            log.seek(0)
            raise TimeoutError(f"daphne did not start: {log.read().decode(errors='replace')[-3000:]}") from None
        yield port
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()

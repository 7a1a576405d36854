"""Count the database queries one reply costs, in-process, against the fake provider on 127.0.0.1.

Run by bench/run.py (`python -m bench.queries DATABASE_URL`): a site, one visitor connection through
channels' WebsocketCommunicator, REPLIES messages; every query on every database connection is counted
by an execute wrapper installed as connections are created. Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import sys

REPLIES = int(os.environ.get("BENCH_REPLIES", "20"))


def main() -> None:
    os.environ["DATABASE_URL"] = sys.argv[1]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db.backends.signals import connection_created

    call_command("migrate", verbosity=0, interactive=False)
    counts: collections.Counter[str] = collections.Counter()
    statements: list[str] = []

    def count(execute, sql, params, many, context):  # noqa: ANN001 - Django's execute wrapper signature
        statements.append(sql if os.environ.get("BENCH_SQL") else sql.split()[0].upper())
        return execute(sql, params, many, context)

    def wrap(sender, connection, **kwargs):  # noqa: ANN001
        # The wrapper list outlives reconnections (CONN_MAX_AGE=0 reconnects for every trip): add it once.
        if count not in connection.execute_wrappers:
            connection.execute_wrappers.append(count)

    connection_created.connect(wrap)

    asyncio.run(converse(statements, counts))
    print(json.dumps({"replies": REPLIES, "per_reply": sum(counts.values()) / REPLIES, "by_kind": dict(counts)}))


async def converse(statements: list[str], counts: collections.Counter) -> None:
    from channels.db import database_sync_to_async
    from channels.testing import WebsocketCommunicator

    from backend.asgi import application
    from backend.sites.provisioning import ProviderSpec, SiteSpec, create_site
    from tests.fakes.formats import openai_default
    from tests.fakes.server import FakeServer

    provider = FakeServer(openai_default).start()
    try:
        site = await database_sync_to_async(create_site)(
            SiteSpec(
                name="Bench",
                origins=["https://bench.example"],
                providers=[ProviderSpec(kind="openai", base_url=f"{provider.origin}/v1", api_key="sk-bench-0000")],
            )
        )
        # One visitor asks many questions in a row: lift the per-minute limit so none is refused. Caps that
        # no run reaches make every reply go through the reservation and its settlement, as on a real site.
        from backend.quotas.models import SiteQuota

        limits = {"visitor_messages_per_minute": 1_000_000, "ip_messages_per_minute": 1_000_000}
        caps = {
            "daily_token_cap": 10**12,
            "monthly_token_cap": 10**12,
            "daily_cost_cap": 10**5,
            "monthly_cost_cap": 10**5,
        }
        await database_sync_to_async(SiteQuota.objects.update_or_create)(site=site, defaults=limits | caps)
        ws = WebsocketCommunicator(
            application, f"/ws/chat/{site.key}/", headers=[(b"origin", b"https://bench.example")]
        )
        await ws.connect()
        await ws.send_json_to({"type": "hello"})
        await ws.receive_json_from(timeout=10)
        # Count replies only: not the connection and hello, nor a first reply, which may read what is then
        # kept (the quota ledger seeds a new period's totals in Redis from the database once a period).
        await ws.send_json_to({"type": "message", "id": "warm-up", "text": "Hello"})
        while (await ws.receive_json_from(timeout=10))["type"] != "end":
            pass
        statements.clear()
        for index in range(REPLIES):
            await ws.send_json_to({"type": "message", "id": f"q{index}", "text": f"Question {index}"})
            while (await ws.receive_json_from(timeout=10))["type"] != "end":
                pass
        counts.update(statements)
        await ws.disconnect()
    finally:
        provider.stop()


if __name__ == "__main__":
    main()

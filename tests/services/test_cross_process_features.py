"""Agents, quotas and tickets across two daphne processes on one PostgreSQL and one Redis."""

from __future__ import annotations

import asyncio
import json
import re
import uuid

import httpx
import pytest

from tests.fakes.server import Recorded, Reply
from tests.processes import manage
from tests.services.cluster import services
from tests.tickets.conftest import GOOD_SUMMARY, TICKET, good_reply, signed_headers
from tests.tickets.test_worker import celery_worker, wait_for_status

pytestmark = [services, pytest.mark.services]

CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def logged_in_admin(cluster, index: int) -> httpx.Client:
    """Make a superuser in the shared database and log in to the admin of process `index`."""
    username, password = f"root-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    env = cluster.env | {"DJANGO_SUPERUSER_PASSWORD": password}
    manage(env, "createsuperuser", "--noinput", "--username", username, "--email", f"{username}@example.com")
    client = cluster.http(index)
    token = CSRF.search(client.get("/admin/login/").text).group(1)
    response = client.post(
        "/admin/login/?next=/admin/", data={"username": username, "password": password, "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302, response.text[:500]
    return client


def test_an_agent_reply_sent_through_one_process_reaches_a_visitor_on_the_other(cluster, fake_openai):
    admin = logged_in_admin(cluster, 1)

    async def scenario() -> list[dict]:
        async with cluster.visitor(0) as visitor:
            page = f"/admin/chat/conversation/{visitor.ready['conversation']}/change/"

            def reply() -> int:
                token = CSRF.search(admin.get(page).text).group(1)
                return admin.post(
                    page, data={"reply": "Hello from a person.", "csrfmiddlewaretoken": token}
                ).status_code

            assert await asyncio.to_thread(reply) in (200, 302)
            frames = [await visitor.receive(timeout=15)]
            while frames[-1]["type"] != "message":
                frames.append(await visitor.receive(timeout=15))
            return frames

    frames = asyncio.run(scenario())
    message = frames[-1]
    assert (message["role"], message["text"]) == ("agent", "Hello from a person.")
    assert {"type": "status", "state": "agent"} in frames
    assert fake_openai.requests == []  # the bot said nothing


def bills_everything_allowed(request: Recorded) -> Reply:
    """Bill the whole max_tokens and a generous prompt count: the worst a real provider may do."""
    from tests.fakes.formats import openai_reply

    body = request.json()
    return openai_reply(["Sure", "."], usage=(len(str(body["messages"])) // 4, body["max_tokens"]), delay=0.05)


def test_a_token_cap_holds_across_both_processes_under_a_burst(cluster, fake_openai):
    key = cluster.site_key
    cluster.query(
        "from backend.quotas.models import SiteQuota; from backend.sites.models import Site; "
        f"site = Site.objects.get(key={key!r}); Site.objects.filter(pk=site.pk).update(max_reply_tokens=100); "
        "SiteQuota.objects.update_or_create(site=site, defaults=dict(daily_token_cap=1000, ip_connections=100,"
        " ip_messages_per_minute=1000, visitor_messages_per_minute=1000)); print(1)"
    )
    burst = 30
    fake_openai.queue(*[bills_everything_allowed] * burst)

    async def one(number: int) -> dict:
        async with cluster.visitor(number % 2) as visitor:
            frames = await visitor.ask(f"m{number}", f"question {number}", timeout=30)
            return frames[-1]

    async def everyone() -> list[dict]:
        return await asyncio.gather(*(one(n) for n in range(burst)))

    last = asyncio.run(everyone())
    answered = [f for f in last if f["type"] == "end"]
    refused = [f for f in last if f["type"] == "error"]
    assert len(answered) >= 1 and len(answered) + len(refused) == burst
    assert all(f["code"] == "quota_exceeded" for f in refused)
    billed = cluster.query(
        "import json; from django.db.models import F, Sum; from backend.quotas.models import UsageRecord; "
        f"print(json.dumps(UsageRecord.objects.filter(site__key={key!r})"
        ".aggregate(t=Sum(F('input_tokens') + F('output_tokens')))['t']))"
    )
    assert 0 < billed <= 1000
    assert len(fake_openai.requests) == len(answered)  # no provider call past the cap, from either process


def test_a_worker_summarizes_tickets_posted_to_either_process(cluster, fake_openai):
    secret = cluster.query(
        f"from backend.sites.models import Site; import json; print(json.dumps(Site.objects.get(key={cluster.site_key!r}).webhook_secret))"
    )
    site = {"key": cluster.site_key, "webhook_secret": secret}
    fake_openai.queue(good_reply(), good_reply())
    with celery_worker(cluster.env):
        accepted = [
            post_ticket(server.port, site, TICKET | {"external_id": f"desk-{index}"}, f"msg_{uuid.uuid4().hex}")
            for index, server in enumerate(cluster.servers)
        ]
        statuses = [
            wait_for_status(cluster.servers[1 - index].port, json_path(ticket["url"]), secret, "done")
            for index, ticket in enumerate(accepted)
        ]
    assert [status["status"] for status in statuses] == ["done", "done"]
    assert all(status["summary"] == GOOD_SUMMARY for status in statuses)
    assert len({ticket["id"] for ticket in accepted}) == 2


def post_ticket(port: int, site: dict, body: dict, webhook_id: str) -> dict:
    raw = json.dumps(body).encode()
    response = httpx.post(
        f"http://127.0.0.1:{port}/api/sites/{site['key']}/tickets/",
        content=raw,
        headers={
            "Content-Type": "application/json",
            **signed_headers(site["webhook_secret"], raw, webhook_id=webhook_id),
        },
    )
    assert response.status_code == 202, response.text
    return response.json()


def json_path(url: str) -> str:
    return httpx.URL(url).path

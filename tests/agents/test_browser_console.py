"""Done when: a visitor and an agent in a real browser hold a live conversation, the bot quiet until handed back.

daphne serves the app; the agent uses the admin in Chromium (the live page script included), the visitor
speaks the widget's protocol over a real WebSocket, and the bot is a fake OpenAI server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil

import pytest
import websockets

from tests.processes import create_site, daphne, manage, server_env

ORIGIN = "https://shop.example"
# How long to wait for something to happen at all (a loaded CI machine runs two servers and a browser).
WAIT_MS = 45000
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None and not os.environ.get("PARLEY_REQUIRE_BROWSER"), reason="no Chromium installed"
    ),
]

MAKE_AGENT = """
from django.contrib.auth.models import Group, User
from backend.agents.models import Assignment
from backend.sites.models import Site
user = User.objects.create_user("ann", "ann@shop.example", "ann-password-123", first_name="Ann", last_name="Agent", is_staff=True)
user.groups.add(Group.objects.get(name="Support agents"))
Assignment.objects.create(user=user, site=Site.objects.get(name="Shop"))
"""


@pytest.fixture
def shop(tmp_path, fake_openai):
    # With Redis, the visitor and the agent use two server processes that share only the database and Redis.
    extra = {"REDIS_URL": os.environ["REDIS_URL"]} if os.environ.get("REDIS_URL") else {}
    env = server_env(f"sqlite:///{tmp_path / 'console.sqlite3'}", **extra)
    manage(env, "migrate", "--noinput", "-v0")
    key = create_site(env, fake_openai.origin, origin=ORIGIN)
    manage(env, "shell", "-c", MAKE_AGENT)
    return env, key


async def shoot(page, name: str) -> None:
    """Save a screenshot when PARLEY_SCREENSHOTS names a folder (for looking at the pages by eye)."""
    folder = os.environ.get("PARLEY_SCREENSHOTS")
    if folder:
        await page.screenshot(path=os.path.join(folder, f"agents-{name}.png"), full_page=True)


class Visitor:
    def __init__(self, ws) -> None:
        self.ws = ws

    async def send(self, frame: dict) -> None:
        await self.ws.send(json.dumps(frame))

    async def until(self, kind: str) -> dict:
        while True:
            frame = json.loads(await asyncio.wait_for(self.ws.recv(), WAIT_MS / 1000))
            if frame["type"] == kind:
                return frame


async def test_a_visitor_and_an_agent_talk_live_with_the_bot_quiet_until_handed_back(shop, fake_openai):
    from playwright.async_api import async_playwright, expect

    env, site_key = shop
    with daphne(env) as port, contextlib.ExitStack() as stack:
        visitor_port = stack.enter_context(daphne(env)) if "REDIS_URL" in env else port
        base = f"http://127.0.0.1:{port}"
        async with (
            async_playwright() as p,
            websockets.connect(
                f"ws://127.0.0.1:{visitor_port}/ws/chat/{site_key}/", origin=ORIGIN, ping_interval=None
            ) as ws,
        ):
            browser = await p.chromium.launch(executable_path=CHROMIUM)
            try:
                page = await browser.new_page()
                page.set_default_timeout(WAIT_MS)
                await page.goto(f"{base}/admin/login/?next=/admin/chat/conversation/")
                await page.fill("#id_username", "ann")
                await page.fill("#id_password", "ann-password-123")
                await page.click("input[type=submit]")
                await expect(page.locator("#parley-live")).to_have_text("Live", timeout=WAIT_MS)
                await page.evaluate("window.parleyNotReloaded = true")

                visitor = Visitor(ws)
                await visitor.send({"type": "hello"})
                ready = await visitor.until("ready")
                await visitor.send({"type": "message", "id": "m1", "text": "Do you ship to Norway?"})
                await visitor.until("end")
                assert len(fake_openai.requests) == 1

                # The inbox shows the new conversation, then its handoff, without a reload by the agent.
                await expect(page.locator("#result_list")).to_contain_text("You said: Do you ship", timeout=WAIT_MS)
                await visitor.send({"type": "handoff"})
                assert (await visitor.until("status"))["state"] == "waiting"
                await expect(page.locator("#result_list")).to_contain_text("Waiting", timeout=WAIT_MS)

                # The agent opens it and replies; the visitor gets the message at once.
                await page.goto(f"{base}/admin/chat/conversation/{ready['conversation']}/change/")
                await expect(page.locator("#parley-live")).to_have_text("Live", timeout=WAIT_MS)
                await page.evaluate("window.parleyNotReloaded = true")
                await page.fill("textarea[name=reply]", "Hi, I'm Ann. Yes, we do.")
                async with page.expect_navigation():  # the form posts, then the page loads again
                    await page.click("button[value=reply]")
                assert (await visitor.until("status"))["state"] == "agent"
                message = await visitor.until("message")
                assert (message["role"], message["text"], message["author"]) == (
                    "agent",
                    "Hi, I'm Ann. Yes, we do.",
                    "Ann Agent",
                )

                # The visitor answers: the agent sees it live, and the bot says nothing.
                await expect(page.locator("#parley-live")).to_have_text("Live", timeout=WAIT_MS)
                await page.evaluate("window.parleyNotReloaded = true")
                await visitor.send({"type": "message", "id": "m2", "text": "Great, how long does it take?"})
                assert (await visitor.until("ack"))["state"] == "agent"
                await expect(page.locator("#parley-transcript")).to_contain_text(
                    "how long does it take", timeout=WAIT_MS
                )
                assert await page.evaluate("window.parleyNotReloaded === true")
                assert len(fake_openai.requests) == 1

                # Handed back, the bot answers again.
                await page.click("button[value=hand_back]")
                assert (await visitor.until("status"))["state"] == "bot"
                await visitor.send({"type": "message", "id": "m3", "text": "Thanks!"})
                end = await visitor.until("end")
                assert end["text"] == "You said: Thanks!"
                assert len(fake_openai.requests) == 2
                await expect(page.locator("#parley-transcript")).to_contain_text("You said: Thanks!", timeout=WAIT_MS)
                await shoot(page, "conversation")
                await page.goto(f"{base}/admin/chat/conversation/")
                await shoot(page, "inbox")
            finally:
                await browser.close()

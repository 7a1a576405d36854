"""Retries, fallbacks, timeouts and broken streams, as a visitor and the operator's log see them."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from channels.db import database_sync_to_async

from backend.chat.models import Message
from backend.providers.models import ProviderConfig
from tests.conftest import FAKE_KEY, chat, connect_and_hello, receive_until_end
from tests.fakes.formats import (
    anthropic_error,
    anthropic_error_body,
    anthropic_reply,
    anthropic_stream,
    gemini_bad_key,
    gemini_error,
    gemini_rate_limited,
    gemini_stream,
    ndjson,
    ollama_error,
    ollama_stream,
    openai_error,
    openai_reply,
    openai_stream,
    sse,
)
from tests.fakes.server import Reply
from tests.processes import free_port
from tests.providers.conftest import ANTHROPIC_KEY, GEMINI_KEY, amake_site, spec_for

pytestmark = pytest.mark.django_db(transaction=True)

db = database_sync_to_async
PIECES = ["Half", " an", " answer", " and", " more", " words"]


async def ask(site, text: str = "Is my order shipped?") -> list[dict]:
    async with chat(site.key) as ws:
        await connect_and_hello(ws)
        await ws.send_json_to({"type": "message", "id": "c1", "text": text})
        return await receive_until_end(ws)


async def stored(frames: list[dict]) -> Message | None:
    return await db(Message.objects.filter(id=frames[-1]["message"]).first)()


def provider_errors(frames: list[dict]) -> list[dict]:
    return [f for f in frames if f["type"] == "error"]


# -- retries before the first token ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "busy"),
    [
        ("openai", openai_error(429, "Rate limit reached", "requests", "rate_limit_exceeded", {"retry-after": "0"})),
        ("anthropic", anthropic_error(429, "rate_limit_error", "Slow down", {"retry-after-ms": "5"})),
        ("gemini", gemini_rate_limited("0s")),
        ("ollama", ollama_error(503, "server busy, please try again. maximum pending requests exceeded")),
    ],
)
async def test_a_busy_provider_is_retried_and_then_answers(servers, kind, busy):
    servers[kind].queue(busy)
    site = await amake_site(spec_for(kind, servers[kind]))
    frames = await ask(site)
    assert provider_errors(frames) == []
    assert frames[-1]["status"] == "complete" and frames[-1]["text"] == "You said: Is my order shipped?"
    assert len(servers[kind].requests) == 2
    reply = await stored(frames)
    assert (reply.provider, reply.attempts) == (kind, 2)


@pytest.mark.parametrize(
    "headers",
    [
        {"retry-after": "3600"},
        {"retry-after-ms": "3600000"},
        {"retry-after": format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)},
    ],
)
async def test_a_retry_after_longer_than_the_budget_hands_over_at_once(servers, headers):
    servers["openai"].queue(openai_error(429, "Rate limit reached", "requests", "rate_limit_exceeded", headers))
    site = await amake_site(spec_for("openai", servers["openai"]), spec_for("anthropic", servers["anthropic"]))
    frames = await ask(site)
    assert frames[-1]["status"] == "complete"
    assert len(servers["openai"].requests) == 1, "the upstream asked for an hour: no second call"
    assert (await stored(frames)).provider == "anthropic"


async def test_geminis_retry_delay_longer_than_the_budget_hands_over_at_once(servers):
    servers["gemini"].queue(gemini_rate_limited("35s"))
    site = await amake_site(spec_for("gemini", servers["gemini"]), spec_for("ollama", servers["ollama"]))
    frames = await ask(site)
    assert len(servers["gemini"].requests) == 1
    assert (await stored(frames)).provider == "ollama"


async def test_retries_stop_after_the_attempt_limit(servers, settings, caplog):
    settings.PROVIDER_MAX_ATTEMPTS = 2
    servers["openai"].queue(*[openai_error(500, "The server had an error", "server_error")] * 5)
    site = await amake_site(spec_for("openai", servers["openai"]))
    caplog.set_level(logging.INFO)
    frames = await ask(site)
    assert [f["code"] for f in provider_errors(frames)] == ["provider_error"]
    assert frames[-1]["status"] == "error"
    assert len(servers["openai"].requests) == 2
    assert await db(Message.objects.filter(role="assistant").count)() == 0


# -- fallbacks -------------------------------------------------------------------------------------------
async def test_an_overloaded_primary_hands_over_and_the_reply_records_the_fallback(servers):
    servers["anthropic"].queue(*[anthropic_error(529, "overloaded_error", "Overloaded")] * 3)
    site = await amake_site(
        spec_for("anthropic", servers["anthropic"], model="claude-sonnet-4-6"),
        spec_for("openai", servers["openai"], model="gpt-5-mini"),
    )
    frames = await ask(site)
    assert provider_errors(frames) == [] and frames[-1]["status"] == "complete"
    assert len(servers["anthropic"].requests) == 3  # retried up to the limit first
    reply = await stored(frames)
    assert (reply.provider, reply.model, reply.attempts) == ("openai", "gpt-5-mini", 4)
    assert reply.cost > 0  # priced at the fallback's model


async def test_a_503_on_gemini_falls_back_to_a_local_ollama(servers):
    servers["gemini"].queue(*[gemini_error(503, "UNAVAILABLE", "The model is overloaded.")] * 3)
    site = await amake_site(spec_for("gemini", servers["gemini"]), spec_for("ollama", servers["ollama"]))
    frames = await ask(site)
    assert frames[-1]["status"] == "complete"
    assert ((await stored(frames)).provider, len(servers["gemini"].requests)) == ("ollama", 3)


async def test_a_401_is_not_retried_but_the_next_provider_answers(servers, caplog):
    servers["anthropic"].queue(anthropic_error(401, "authentication_error", "invalid x-api-key"))
    site = await amake_site(spec_for("anthropic", servers["anthropic"]), spec_for("openai", servers["openai"]))
    caplog.set_level(logging.INFO)
    frames = await ask(site)
    assert frames[-1]["status"] == "complete"
    assert len(servers["anthropic"].requests) == 1
    assert (await stored(frames)).attempts == 2
    assert "anthropic answered 401: invalid x-api-key" in caplog.text


@pytest.mark.parametrize("status", [400, 401, 403, 404])
async def test_client_errors_are_never_retried(servers, status):
    servers["openai"].queue(openai_error(status, "Nope", "invalid_request_error"))
    site = await amake_site(spec_for("openai", servers["openai"]))
    frames = await ask(site)
    assert frames[-1]["status"] == "error" and len(servers["openai"].requests) == 1


async def test_a_bad_gemini_key_is_a_400_that_is_not_retried_and_is_logged_by_reason(servers, caplog):
    servers["gemini"].queue(gemini_bad_key())
    site = await amake_site(spec_for("gemini", servers["gemini"]))
    caplog.set_level(logging.INFO)
    frames = await ask(site)
    assert [f["code"] for f in provider_errors(frames)] == ["provider_error"]
    assert len(servers["gemini"].requests) == 1
    assert "API key not valid" in caplog.text and GEMINI_KEY not in caplog.text


async def test_when_every_provider_fails_the_visitor_gets_no_details_and_the_log_gets_each_reason(servers, caplog):
    servers["anthropic"].queue(anthropic_error(401, "authentication_error", "invalid x-api-key"))
    servers["openai"].queue(openai_error(404, "The model `gpt-9` does not exist", "invalid_request_error"))
    site = await amake_site(spec_for("anthropic", servers["anthropic"]), spec_for("openai", servers["openai"]))
    caplog.set_level(logging.INFO)
    frames = await ask(site, "my card number is 4242")
    [error] = provider_errors(frames)
    assert error == {
        "type": "error",
        "code": "provider_error",
        "message": "The assistant could not answer just now. Please try again.",
        "reply_to": "c1",
    }
    assert frames[-1] == {"type": "end", "message": frames[0]["message"], "status": "error", "text": ""}
    assert "invalid x-api-key" in caplog.text and "gpt-9` does not exist" in caplog.text
    for secret in (ANTHROPIC_KEY, FAKE_KEY, "4242"):
        assert secret not in caplog.text and secret not in json.dumps(frames)
    # Nothing stored for the reply, so resending the message asks again.
    assert await db(Message.objects.filter(role="assistant").count)() == 0


async def test_an_unreachable_provider_is_retried_then_skipped(servers):
    port = free_port()  # nothing listens there
    site = await amake_site(
        spec_for("ollama", servers["ollama"], base_url=f"http://127.0.0.1:{port}"),
        spec_for("openai", servers["openai"]),
    )
    frames = await ask(site)
    reply = await stored(frames)
    assert (reply.provider, reply.attempts) == ("openai", 4)


async def test_a_provider_that_cannot_be_reached_still_gets_the_visitor_a_start_an_error_and_an_end(servers):
    port = free_port()  # nothing listens there
    site = await amake_site(spec_for("ollama", servers["ollama"], base_url=f"http://127.0.0.1:{port}"))
    frames = await ask(site)
    # The start frame waits for the request to be out; when it never is, it still opens the reply.
    assert [f["type"] for f in frames] == ["start", "error", "end"]
    assert frames[0]["message"] == frames[2]["message"] and frames[2]["status"] == "error"
    assert frames[1]["code"] == "provider_error" and str(port) not in json.dumps(frames)


async def test_the_start_frame_arrives_while_the_provider_is_still_thinking(servers):
    slow = servers["openai"]
    slow.queue(openai_reply(["Take", " your", " time"]))
    slow.script[0].first_byte_delay = 3
    site = await amake_site(spec_for("openai", slow))
    async with chat(site.key) as ws:
        await connect_and_hello(ws)
        await ws.send_json_to({"type": "message", "id": "c1", "text": "Anyone?"})
        # Well before the provider's first byte: the widget shows the reply coming while the model thinks.
        start = await ws.receive_json_from(timeout=2)
        assert start["type"] == "start" and start["reply_to"] == "c1"
        assert await asyncio.to_thread(slow.wait_for, lambda: len(slow.requests) == 1)
        frames = await receive_until_end(ws, timeout=5)
    assert frames[0]["type"] == "delta" and frames[-1]["text"] == "Take your time"


async def test_a_slow_first_byte_times_out_and_the_fallback_answers(servers, settings):
    settings.PROVIDER_MAX_ATTEMPTS = 2
    slow = servers["anthropic"]
    slow.queue(*[anthropic_reply(["late"])] * 2)
    for reply in slow.script:
        reply.first_byte_delay = 5
    site = await amake_site(spec_for("anthropic", slow), spec_for("openai", servers["openai"]))
    await db(ProviderConfig.objects.filter(kind="anthropic").update)(first_byte_timeout=0.2)
    frames = await ask(site)
    assert frames[-1]["status"] == "complete"
    assert (await stored(frames)).provider == "openai"
    assert slow.wait_for(lambda: slow.disconnects == 2), "each timed-out request was closed"


async def test_a_stream_that_goes_quiet_mid_reply_ends_in_error_with_the_partial_text(servers):
    servers["ollama"].queue(Reply(pieces=ollama_stream(PIECES), delay=5, content_type="application/x-ndjson"))
    site = await amake_site(spec_for("ollama", servers["ollama"]), spec_for("openai", servers["openai"]))
    await db(ProviderConfig.objects.filter(kind="ollama").update)(idle_timeout=0.2)
    frames = await ask(site)
    assert frames[-1]["status"] == "error" and frames[-1]["text"] == "Half"
    assert servers["openai"].requests == [], "a reply already under way is not restarted elsewhere"


# -- broken streams --------------------------------------------------------------------------------------
def cut(kind: str) -> Reply:
    if kind == "anthropic":
        return Reply(pieces=anthropic_stream(PIECES), cut_after=5)  # start, block start, ping, 2 deltas
    if kind == "gemini":
        return Reply(pieces=gemini_stream(PIECES), cut_after=2)
    if kind == "ollama":
        return Reply(pieces=ollama_stream(PIECES), cut_after=2, content_type="application/x-ndjson")
    return Reply(pieces=openai_stream(PIECES), cut_after=4)  # keep-alive, role chunk, 2 pieces


def error_mid_stream(kind: str) -> Reply:
    if kind == "anthropic":
        pieces = anthropic_stream(PIECES)[:5] + [sse(anthropic_error_body("overloaded_error", "Overloaded"), "error")]
        return Reply(pieces=pieces)
    if kind == "gemini":
        error = {"error": {"code": 500, "message": "Internal error encountered.", "status": "INTERNAL"}}
        return Reply(pieces=gemini_stream(PIECES)[:2] + [sse(error)])
    if kind == "ollama":
        pieces = ollama_stream(PIECES)[:2] + [ndjson({"error": "an error was encountered while running the model"})]
        return Reply(pieces=pieces, content_type="application/x-ndjson")
    error = {"error": {"message": "The server had an error", "type": "server_error", "code": None}}
    return Reply(pieces=openai_stream(PIECES)[:4] + [sse(error)])


def malformed_mid_stream(kind: str) -> Reply:
    if kind == "anthropic":
        return Reply(pieces=anthropic_stream(PIECES)[:5] + [b"event: content_block_delta\ndata: {not json\n\n"])
    if kind == "gemini":
        return Reply(pieces=gemini_stream(PIECES)[:2] + [b"data: {not json\n\n"])
    if kind == "ollama":
        return Reply(pieces=ollama_stream(PIECES)[:2] + [b"{not json\n"], content_type="application/x-ndjson")
    return Reply(pieces=openai_stream(PIECES)[:4] + [b'data: {"choices": "not a list"}\n\n'])


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini", "ollama"])
@pytest.mark.parametrize("breakage", [cut, error_mid_stream, malformed_mid_stream])
async def test_a_stream_broken_after_the_first_token_ends_in_error_and_keeps_the_partial_text(servers, kind, breakage):
    servers[kind].queue(breakage(kind))
    fallback = "lmstudio"
    site = await amake_site(spec_for(kind, servers[kind]), spec_for(fallback, servers[fallback]))
    frames = await ask(site)
    assert [f["code"] for f in provider_errors(frames)] == ["provider_error"]
    assert frames[-1]["status"] == "error" and frames[-1]["text"] == "Half an"
    reply = await stored(frames)
    assert (reply.status, reply.text, reply.provider, reply.attempts) == ("error", "Half an", kind, 1)
    assert reply.error  # the reason is kept for the operator
    assert servers[fallback].requests == []


@pytest.mark.parametrize(
    ("kind", "broken"),
    [
        ("openai", Reply(pieces=[sse({"error": {"message": "bad request", "type": "invalid_request_error"}})])),
        ("openai", Reply(pieces=[b"data: {not json\n\n"])),
        (
            "anthropic",
            Reply(pieces=[sse(anthropic_error_body("invalid_request_error", "prompt is too long"), "error")]),
        ),
        ("gemini", Reply(pieces=[b"data: [1, 2]\n\n"])),
        ("gemini", Reply(pieces=[b'{"candidates": []}'], content_type="application/json")),
        ("anthropic", Reply(pieces=[b"<html>Bad gateway</html>"], content_type="text/html")),
        ("ollama", Reply(pieces=[ndjson({"error": 'model "llama3.2" not found, try pulling it first'})])),
        ("ollama", Reply(pieces=[b"<html>proxy error</html>\n"], content_type="text/html")),
    ],
)
async def test_a_stream_broken_before_the_first_token_hands_over_to_the_next_provider(servers, kind, broken):
    servers[kind].queue(broken)
    site = await amake_site(spec_for(kind, servers[kind]), spec_for("lmstudio", servers["lmstudio"]))
    frames = await ask(site)
    assert provider_errors(frames) == [] and frames[-1]["status"] == "complete"
    reply = await stored(frames)
    assert (reply.provider, reply.attempts) == ("lmstudio", 2)
    assert len(servers[kind].requests) == 1  # a broken stream is not a busy server: not retried


async def test_an_overloaded_error_event_before_any_text_is_retried(servers):
    pieces = anthropic_stream([])[:1] + [sse(anthropic_error_body("overloaded_error", "Overloaded"), "error")]
    servers["anthropic"].queue(Reply(pieces=pieces))
    site = await amake_site(spec_for("anthropic", servers["anthropic"]))
    frames = await ask(site)
    assert frames[-1]["status"] == "complete"
    assert ((await stored(frames)).attempts, len(servers["anthropic"].requests)) == (2, 2)


# -- stop ------------------------------------------------------------------------------------------------
def slow(kind: str) -> Reply:
    reply = {"anthropic": anthropic_reply, "openai": openai_reply}.get(kind)
    if reply:
        return reply(PIECES, delay=0.3)
    if kind == "gemini":
        return Reply(pieces=gemini_stream(PIECES), delay=0.3)
    return Reply(pieces=ollama_stream(PIECES), delay=0.3, content_type="application/x-ndjson")


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini", "ollama"])
async def test_stop_closes_the_upstream_connection_at_once(servers, kind):
    server = servers[kind]
    server.queue(slow(kind))
    site = await amake_site(spec_for(kind, server))
    async with chat(site.key) as ws:
        await connect_and_hello(ws)
        await ws.send_json_to({"type": "message", "id": "c1", "text": "tell me everything"})
        assert (await ws.receive_json_from())["type"] == "start"
        assert (await ws.receive_json_from())["type"] == "delta"
        await ws.send_json_to({"type": "stop"})
        frames = await receive_until_end(ws)
    assert frames[-1]["status"] == "stopped"
    assert server.wait_for(lambda: server.disconnects == 1)
    assert server.completed == 0
    reply = await stored(frames)
    assert (reply.status, reply.provider, reply.attempts) == ("stopped", kind, 1)


# -- the log ---------------------------------------------------------------------------------------------
async def test_each_call_is_logged_with_its_numbers_but_never_the_key_or_the_text(servers, caplog):
    servers["anthropic"].queue(anthropic_reply(["Sure", "."], usage=(1000, 500)))
    site = await amake_site(spec_for("anthropic", servers["anthropic"], model="claude-haiku-4-5"))
    caplog.set_level(logging.DEBUG)
    await ask(site, "my secret address is 12 Elm Street")
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("provider call:"))
    for part in (
        "provider=anthropic",
        "model=claude-haiku-4-5",
        "status=complete",
        "attempts=1",
        "latency_ms=",
        "tokens_in=1000",
        "tokens_out=500",
        "cost_usd=0.003500",
    ):
        assert part in line, part
    assert ANTHROPIC_KEY not in caplog.text and "Elm Street" not in caplog.text and "Sure" not in caplog.text


async def test_stop_during_a_retry_wait_ends_the_reply_without_calling_again(servers):
    server = servers["anthropic"]
    server.queue(anthropic_error(429, "rate_limit_error", "Slow down", {"retry-after": "3"}))
    site = await amake_site(spec_for("anthropic", server), spec_for("openai", servers["openai"]))
    async with chat(site.key) as ws:
        await connect_and_hello(ws)
        await ws.send_json_to({"type": "message", "id": "c1", "text": "hello?"})
        assert (await ws.receive_json_from())["type"] == "start"
        assert await asyncio.to_thread(server.wait_for, lambda: len(server.requests) == 1)
        await asyncio.sleep(0.1)  # the 429 is read and the chain is waiting to retry
        await ws.send_json_to({"type": "stop"})
        frames = await receive_until_end(ws, timeout=2)
    assert frames[-1]["status"] == "stopped" and frames[-1]["text"] == ""
    assert len(server.requests) == 1 and servers["openai"].requests == []
    reply = await stored(frames)
    assert (reply.status, reply.attempts) == ("stopped", 1)


async def test_a_gemini_unavailable_error_inside_the_stream_before_any_text_is_retried(servers):
    error = {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
    servers["gemini"].queue(Reply(pieces=[sse(error)]))
    site = await amake_site(spec_for("gemini", servers["gemini"]))
    frames = await ask(site)
    assert frames[-1]["status"] == "complete"
    assert ((await stored(frames)).attempts, len(servers["gemini"].requests)) == (2, 2)

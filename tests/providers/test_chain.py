"""ChainRun and the adapters used directly, the way the quotas, tickets and knowledge-base code call them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from backend.providers.base import ChatMessage, ChatRequest, Endpoint, ProviderError
from backend.providers.chain import Attempt, ChainRun
from backend.providers.http import parse_retry_after, parse_retry_delay
from backend.providers.presets import PRESETS
from tests.fakes.formats import (
    anthropic_default,
    anthropic_error,
    gemini_default,
    gemini_stream,
    ollama_default,
    ollama_reply,
    openai_default,
    openai_error,
    openai_reply,
    openai_stream,
    sse,
)
from tests.fakes.server import FakeServer, Recorded, Reply
from tests.providers.conftest import ANTHROPIC_KEY, GEMINI_KEY

REQUEST = ChatRequest(system="Be brief.", messages=[ChatMessage("user", "Hello there")], max_tokens=64)
# Each wire protocol that calls over HTTP, with its fake's default answer (an echo of the last message).
HTTP_KINDS = [
    ("openai", openai_default),
    ("anthropic", anthropic_default),
    ("gemini", gemini_default),
    ("ollama", ollama_default),
]


def endpoint(kind: str, server, **overrides) -> Endpoint:
    preset = PRESETS[kind]
    base = {"openai": "/v1", "gemini": "/v1beta"}.get(kind, "")
    key = {"anthropic": ANTHROPIC_KEY, "gemini": GEMINI_KEY, "openai": "sk-chain-test-0000"}.get(kind, "")
    values = {
        "kind": kind,
        "protocol": preset.protocol,
        "base_url": server.origin + base,
        "model": preset.default_model,
        "api_key": key,
    }
    return Endpoint(**(values | overrides))


async def collect(run: ChainRun) -> str:
    return "".join([chunk async for chunk in run.stream()])


async def test_a_run_reports_who_answered_the_usage_and_each_attempt(fake_anthropic, fake_openai):
    fake_anthropic.queue(anthropic_error(529, "overloaded_error", "Overloaded"))
    run = ChainRun([endpoint("anthropic", fake_anthropic), endpoint("openai", fake_openai)], REQUEST)
    assert (run.endpoint, run.attempts, run.end, run.started_text) == (None, [], None, False)
    assert await collect(run) == "You said: Hello there"
    assert run.endpoint.kind == "anthropic" and run.started_text
    assert [(a.kind, a.model, a.status) for a in run.attempts] == [
        ("anthropic", "claude-haiku-4-5", "error"),
        ("anthropic", "claude-haiku-4-5", "ok"),
    ]
    assert run.attempts[0].error == "anthropic answered 529: Overloaded" and run.attempts[1].error == ""
    assert all(isinstance(a, Attempt) and a.latency_ms >= 0 for a in run.attempts)
    assert run.end.finish_reason == "end_turn" and run.end.output_tokens == 4
    assert fake_openai.requests == []


async def test_a_failure_after_the_first_token_raises_and_keeps_the_answering_endpoint(fake_ollama, fake_openai):
    fake_ollama.queue(Reply(pieces=ollama_reply(["One", " two", " three"]).pieces, cut_after=2))
    run = ChainRun([endpoint("ollama", fake_ollama), endpoint("openai", fake_openai)], REQUEST)
    seen = []
    with pytest.raises(ProviderError, match="ollama connection failed"):
        async for chunk in run.stream():
            seen.append(chunk)
    assert seen == ["One", " two"] and run.endpoint.kind == "ollama" and run.end is None
    assert fake_openai.requests == []


async def test_when_all_fail_the_error_names_every_reason(fake_anthropic, fake_openai):
    fake_anthropic.queue(anthropic_error(400, "invalid_request_error", "max_tokens: field required"))
    fake_openai.queue(openai_error(403, "Country not supported", "request_forbidden"))
    run = ChainRun([endpoint("anthropic", fake_anthropic), endpoint("openai", fake_openai)], REQUEST)
    with pytest.raises(ProviderError) as failure:
        await collect(run)
    assert failure.value.message == (
        "every provider failed: anthropic answered 400: max_tokens: field required; "
        "openai answered 403: Country not supported"
    )
    assert failure.value.status == 403 and not run.started_text
    assert [a.status for a in run.attempts] == ["error", "error"]


async def test_an_empty_chain_fails_at_once():
    with pytest.raises(ProviderError, match="no provider is configured"):
        await collect(ChainRun([], REQUEST))


async def test_a_key_echoed_by_the_upstream_never_reaches_the_error(fake_openai):
    fake_openai.queue(openai_error(401, "Incorrect API key provided: sk-chain-test-0000", "invalid_request_error"))
    run = ChainRun([endpoint("openai", fake_openai)], REQUEST)
    with pytest.raises(ProviderError) as failure:
        await collect(run)
    assert "sk-chain-test-0000" not in failure.value.message and "sk-chain-test-0000" not in run.attempts[0].error
    assert "[key]" in run.attempts[0].error


async def test_x_should_retry_false_stops_a_retry_of_a_500(fake_openai):
    fake_openai.queue(openai_error(500, "Do not retry this", "server_error", headers={"x-should-retry": "false"}))
    run = ChainRun([endpoint("openai", fake_openai)], REQUEST)
    with pytest.raises(ProviderError):
        await collect(run)
    assert len(fake_openai.requests) == 1


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 529])
async def test_every_transient_status_is_retried(fake_openai, status):
    fake_openai.queue(openai_error(status, "try again", "server_error"))
    run = ChainRun([endpoint("openai", fake_openai)], REQUEST)
    assert await collect(run) == "You said: Hello there"
    assert len(run.attempts) == 2


async def test_a_zero_retry_budget_means_no_retries(fake_openai, settings):
    settings.PROVIDER_RETRY_BUDGET_SECONDS = 0
    settings.PROVIDER_RETRY_BASE_SECONDS = 1
    fake_openai.queue(openai_error(503, "busy", "server_error"))
    with pytest.raises(ProviderError):
        await collect(ChainRun([endpoint("openai", fake_openai)], REQUEST))
    assert len(fake_openai.requests) == 1


async def test_closing_the_stream_closes_the_upstream_request(fake_openai):
    fake_openai.queue(openai_reply(["a", " b", " c", " d", " e"], delay=0.3))
    run = ChainRun([endpoint("openai", fake_openai)], REQUEST)
    async with contextlib.aclosing(run.stream()) as chunks:
        async for _ in chunks:
            break
    assert fake_openai.wait_for(lambda: fake_openai.disconnects == 1)
    assert run.attempts[-1].error == "cancelled"


async def test_cancelling_the_task_closes_the_upstream_request(fake_anthropic):
    from tests.fakes.formats import anthropic_reply

    fake_anthropic.queue(anthropic_reply(["a", " b", " c", " d"], delay=0.3))
    run = ChainRun([endpoint("anthropic", fake_anthropic)], REQUEST)
    first = asyncio.Event()

    async def consume() -> None:
        async with contextlib.aclosing(run.stream()) as chunks:
            async for _ in chunks:
                first.set()

    task = asyncio.create_task(consume())
    await first.wait()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert fake_anthropic.wait_for(lambda: fake_anthropic.disconnects == 1)


# -- what each adapter sends and reads ---------------------------------------------------------------------
MIXED = ChatRequest(
    system="S",
    messages=[
        ChatMessage("assistant", "Hi! How can we help?"),  # an agent's greeting before the visitor spoke
        ChatMessage("user", "one"),
        ChatMessage("user", "two"),
        ChatMessage("assistant", "A"),
        ChatMessage("assistant", "B"),
        ChatMessage("user", "three"),
    ],
    max_tokens=50,
)


async def test_anthropic_turns_start_with_the_user_and_alternate(fake_anthropic):
    run = ChainRun([endpoint("anthropic", fake_anthropic)], MIXED)
    assert await collect(run) == "You said: three"
    assert fake_anthropic.requests[0].json()["messages"] == [
        {"role": "user", "content": "one\n\ntwo"},
        {"role": "assistant", "content": "A\n\nB"},
        {"role": "user", "content": "three"},
    ]


async def test_gemini_turns_alternate_and_use_the_role_model(fake_gemini):
    run = ChainRun([endpoint("gemini", fake_gemini)], MIXED)
    await collect(run)
    contents = fake_gemini.requests[0].json()["contents"]
    assert [(c["role"], c["parts"][0]["text"]) for c in contents] == [
        ("user", "one\n\ntwo"),
        ("model", "A\n\nB"),
        ("user", "three"),
    ]


async def test_gemini_counts_thinking_as_output_takes_the_last_usage_and_skips_thought_parts(fake_gemini):
    pieces = gemini_stream(["Answer", " here"], usage=(30, 9), thoughts=120)
    thought = sse({"candidates": [{"content": {"parts": [{"text": "pondering", "thought": True}], "role": "model"}}]})
    fake_gemini.queue(Reply(pieces=[thought, *pieces]))
    run = ChainRun([endpoint("gemini", fake_gemini)], REQUEST)
    assert await collect(run) == "Answer here"
    assert (run.end.input_tokens, run.end.output_tokens, run.end.usage_estimated) == (30, 129, False)


async def test_a_gemini_stream_that_just_stops_without_a_finish_reason_is_truncated(fake_gemini, fake_ollama):
    fake_gemini.queue(Reply(pieces=gemini_stream(["cut", " short"])[:1]))
    run = ChainRun([endpoint("gemini", fake_gemini), endpoint("ollama", fake_ollama)], REQUEST)
    with pytest.raises(ProviderError, match="ended the stream before the reply finished"):
        await collect(run)


async def test_ollama_without_prompt_eval_count_flags_the_usage_as_estimated(fake_ollama):
    fake_ollama.queue(ollama_reply(["Hi"], usage=(None, 3)))
    run = ChainRun([endpoint("ollama", fake_ollama)], REQUEST)
    await collect(run)
    assert (run.end.input_tokens, run.end.output_tokens, run.end.usage_estimated) == (0, 3, True)


async def test_mistral_usage_on_the_finish_chunk_is_read(fake_openai):
    fake_openai.queue(openai_reply(["Bonjour"], usage=(40, 2), usage_on_finish=True))
    run = ChainRun([endpoint("mistral", fake_openai, base_url=fake_openai.origin + "/v1")], REQUEST)
    await collect(run)
    assert (run.end.input_tokens, run.end.output_tokens, run.end.usage_estimated) == (40, 2, False)


async def test_an_unknown_anthropic_event_is_ignored(fake_anthropic):
    from tests.fakes.formats import anthropic_stream

    pieces = anthropic_stream(["Fine"])
    pieces.insert(3, sse({"type": "brand_new_event", "x": 1}, "brand_new_event"))
    fake_anthropic.queue(Reply(pieces=pieces))
    assert await collect(ChainRun([endpoint("anthropic", fake_anthropic)], REQUEST)) == "Fine"


# -- retry hints ---------------------------------------------------------------------------------------------
def test_retry_after_headers_are_read_in_each_form():
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "1500"})) == 1.5
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "1500", "retry-after": "9"})) == 1.5
    assert parse_retry_after(httpx.Headers({"retry-after": "7"})) == 7
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    assert 100 < parse_retry_after(httpx.Headers({"retry-after": later})) <= 120
    past = format_datetime(datetime.now(UTC) - timedelta(seconds=120), usegmt=True)
    assert parse_retry_after(httpx.Headers({"retry-after": past})) == 0
    assert parse_retry_after(httpx.Headers({"retry-after": "soon"})) is None
    assert parse_retry_after(httpx.Headers({})) is None


def test_geminis_retry_delay_is_read_from_the_error_details():
    body = b'{"error": {"code": 429, "details": [{"@type": "x.RetryInfo", "retryDelay": "35s"}]}}'
    assert parse_retry_delay(body) == 35
    assert parse_retry_delay(b'{"error": {"details": [{"retryDelay": "1.5s"}]}}') == 1.5
    assert parse_retry_delay(b'{"error": {"details": [{"retryDelay": "forever"}]}}') is None
    assert parse_retry_delay(b"not json") is None


async def test_an_error_status_whose_body_never_arrives_times_out_and_hands_over(fake_openai, fake_ollama, settings):
    settings.PROVIDER_MAX_ATTEMPTS = 1
    fake_openai.queue(Reply(status=503, pieces=[b'{"error": ', b"{}}"], delay=5, content_type="application/json"))
    run = ChainRun([endpoint("openai", fake_openai, idle_timeout=0.3), endpoint("ollama", fake_ollama)], REQUEST)
    assert await collect(run) == "You said: Hello there"
    assert run.attempts[0].error == "openai answered 503 and then sent nothing for 0.3s"


async def test_a_gemini_model_named_with_its_models_prefix_gets_the_same_path(fake_gemini):
    await collect(ChainRun([endpoint("gemini", fake_gemini, model="models/gemini-2.5-pro")], REQUEST))
    assert fake_gemini.requests[0].path == "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"


async def test_message_text_is_logged_only_when_debug_is_on(fake_ollama, settings, caplog):
    caplog.set_level(logging.DEBUG)
    settings.DEBUG = False
    await collect(ChainRun([endpoint("ollama", fake_ollama)], REQUEST))
    assert "Hello there" not in caplog.text and "provider attempt: provider=ollama" in caplog.text
    settings.DEBUG = True
    await collect(ChainRun([endpoint("ollama", fake_ollama)], REQUEST))
    assert "messages=[('user', 'Hello there')]" in caplog.text


async def test_a_stream_slower_in_all_than_the_idle_limit_is_not_cut_while_each_gap_is_within_it(fake_openai):
    """The gap between chunks is what is timed, not the reply: 8 gaps of 60 ms pass a 100 ms idle limit."""
    fake_openai.queue(Reply(pieces=openai_stream([f"p{n} " for n in range(8)]), delay=0.06))
    run = ChainRun([endpoint("openai", fake_openai, idle_timeout=0.1)], REQUEST)
    assert await collect(run) == "p0 p1 p2 p3 p4 p5 p6 p7 "


@pytest.mark.parametrize(("kind", "responder"), HTTP_KINDS)
async def test_replies_reuse_the_providers_kept_alive_connection(kind, responder):
    """A provider keeps the connection open after a reply; reading each stream to its end (not stopping at
    the protocol's last event) lets the next reply use it, instead of a new TCP and TLS handshake."""
    server = FakeServer(responder, keep_alive=True).start()
    try:
        for _ in range(3):
            run = ChainRun([endpoint(kind, server)], REQUEST)
            assert await collect(run) == "You said: Hello there"
        assert server.wait_for(lambda: server.completed == 3)  # each stream written to its end
        assert server.connections == 1
    finally:
        server.stop()


async def test_a_provider_that_does_not_end_the_body_after_its_last_event_costs_the_connection_not_the_reply():
    server = FakeServer(openai_default, keep_alive=True).start()
    try:
        # The whole stream, [DONE] included, at once; then the body stays open for ten more seconds.
        stream = b"".join(openai_stream(["Still", " here"]))
        server.queue(Reply(pieces=[stream, b": more\n\n"], delay=10.0))
        run = ChainRun([endpoint("openai", server)], REQUEST)
        assert await collect(run) == "Still here"
        assert run.end is not None and run.end.output_tokens == 7
        assert server.wait_for(lambda: server.disconnects == 1)  # the client gave up on the body's end
        assert await collect(ChainRun([endpoint("openai", server)], REQUEST)) == "You said: Hello there"
        assert server.connections == 2
    finally:
        server.stop()


@pytest.mark.parametrize(("kind", "responder"), HTTP_KINDS)
async def test_on_sent_runs_once_the_provider_has_the_whole_request_and_before_it_answers(kind, responder):
    """The chat consumer sends its `start` frame from this hook, so that the frame does not hold up the request."""
    released = threading.Event()

    def answer_once_released(request: Recorded) -> Reply:
        # Blocks the fake until on_sent has run: a hook run only after the answer would wait here in vain.
        return responder(request) if released.wait(5) else Reply(status=400, pieces=[b"on_sent never ran"])

    server = FakeServer(answer_once_released).start()
    seen: list[bytes] = []

    async def on_sent() -> None:
        # The whole body is out: the fake has read it to its Content-Length.
        assert await asyncio.to_thread(server.wait_for, lambda: len(server.requests) == 1)
        seen.append(server.requests[0].body)
        released.set()

    try:
        request = ChatRequest(REQUEST.system, REQUEST.messages, REQUEST.max_tokens, on_sent=on_sent)
        assert await collect(ChainRun([endpoint(kind, server)], request)) == "You said: Hello there"
    finally:
        released.set()
        server.stop()
    assert len(seen) == 1 and b"Hello there" in seen[0]


async def test_on_sent_runs_for_each_attempt(fake_openai):
    fake_openai.queue(openai_error(503, "Try again", "server_error"))
    attempts: list[int] = []

    async def on_sent() -> None:
        attempts.append(len(fake_openai.requests))

    request = ChatRequest(REQUEST.system, REQUEST.messages, REQUEST.max_tokens, on_sent=on_sent)
    run = ChainRun([endpoint("openai", fake_openai)], request)
    assert await collect(run) == "You said: Hello there"
    assert [a.status for a in run.attempts] == ["error", "ok"]
    assert len(attempts) == 2

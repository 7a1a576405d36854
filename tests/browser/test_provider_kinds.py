"""Every provider kind answers a visitor through the widget, in real Chromium, against a fake of its wire format.

Each kind gets its own fake server on 127.0.0.1 speaking that vendor's format (tests/fakes/formats.py), paced so
the reply arrives piece by piece; the site is made with `manage.py createsite --provider KIND --base-url …` and
the app runs under daphne, so the whole path is real: widget → WebSocket → consumer → httpx → fake → back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal

import pytest

from backend.providers.pricing import SEED_PRICES, cost_usd
from tests.browser.conftest import bubbles, widget_text
from tests.browser.test_chat import open_and_ask
from tests.fakes.formats import (
    anthropic_default,
    anthropic_error,
    gemini_default,
    lmstudio_default,
    mistral_default,
    ollama_default,
    openai_default,
    split_words,
)
from tests.fakes.server import FakeServer, Recorded, Reply, Responder

QUESTION = "Where is my parcel?"
ANSWER = f"You said: {QUESTION}"  # what every default responder echoes, one word a piece
PIECE_GAP = 0.1  # seconds between streamed pieces, so the visitor sees the reply grow


def messages_size(body: dict) -> int:
    return len(str(body["messages"])) // 4


def body_size(body: dict) -> int:
    return len(str(body)) // 4


@dataclass(frozen=True)
class Kind:
    responder: Responder
    base: str  # path of the base URL, shaped like the vendor's real one
    path: str  # where the request must land
    key_header: str | None  # the header carrying the key; None for the local kinds
    key_prefix: str
    model: str  # the preset's default model, which the reply must record
    input_tokens: Callable[[dict], int]  # what the default responder reports for a request body


KINDS = {
    "openai": Kind(
        openai_default, "/v1", "/v1/chat/completions", "authorization", "Bearer ", "gpt-4o-mini", messages_size
    ),
    "mistral": Kind(
        mistral_default,
        "/v1",
        "/v1/chat/completions",
        "authorization",
        "Bearer ",
        "mistral-small-latest",
        messages_size,
    ),
    "deepseek": Kind(
        openai_default, "", "/chat/completions", "authorization", "Bearer ", "deepseek-chat", messages_size
    ),
    "lmstudio": Kind(lmstudio_default, "/v1", "/v1/chat/completions", None, "", "local-model", messages_size),
    "ollama": Kind(ollama_default, "", "/api/chat", None, "", "llama3.2", body_size),
    "anthropic": Kind(anthropic_default, "", "/v1/messages", "x-api-key", "", "claude-haiku-4-5", body_size),
    "gemini": Kind(
        gemini_default,
        "/v1beta",
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        "x-goog-api-key",
        "",
        "gemini-2.5-flash",
        body_size,
    ),
}
LOCAL = {"lmstudio", "ollama"}


def key_for(kind: str) -> str:
    return "" if kind in LOCAL else f"sk-{kind}-browser-key-0123456789"


def paced(responder: Responder) -> Responder:
    """Answer as the responder does, with a pause between the pieces of a successful stream."""

    def respond(request: Recorded) -> Reply:
        reply = responder(request)
        if reply.status == 200:
            reply.delay = PIECE_GAP
        return reply

    return respond


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeServer]]:
    servers = {kind: FakeServer(paced(spec.responder)).start() for kind, spec in KINDS.items()}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def fresh(fakes) -> dict[str, FakeServer]:
    for server in fakes.values():
        server.reset()
    return fakes


def provider_args(kind: str, server: FakeServer) -> list[str]:
    args = ["--provider", kind, "--base-url", server.origin + KINDS[kind].base]
    return args + (["--api-key", key_for(kind)] if key_for(kind) else [])


def stored_replies(app, key: str) -> list[dict]:
    """Read the site's assistant replies from the app's database, as the admin would show them."""
    fields = "provider model input_tokens output_tokens usage_estimated cost attempts status text".split()
    code = (
        "import json; from backend.chat.models import Message; "
        f"rows = Message.objects.filter(conversation__site__key={key!r}, role='assistant', reply_to__isnull=False)"
        ".order_by('created'); "
        f"print(json.dumps([{{f: str(getattr(m, f)) for f in {fields!r}}} for m in rows]))"
    )
    return json.loads(app.shell(code).strip().splitlines()[-1])


def priced(kind: str, model: str, input_tokens: int, output_tokens: int) -> Decimal:
    """What the seeded public price table makes of these tokens."""
    [(inp, out)] = [(Decimal(i), Decimal(o)) for k, m, i, o in SEED_PRICES if (k, m) == (kind, model)]
    return cost_usd((inp, out), input_tokens, output_tokens)


def record_frames(page) -> list[dict]:
    """Collect every WebSocket frame the page receives."""
    frames: list[dict] = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(json.loads(payload))))
    return frames


# Keeps each distinct text the newest assistant bubble shows, as the widget renders it.
WATCH_REPLY = """() => {
  const root = document.querySelector('parley-chat').shadowRoot;
  window.__shown = [];
  new MutationObserver(() => {
    const all = root.querySelectorAll('.log .m.assistant');
    const text = all.length ? all[all.length - 1].innerText.replace(/\\s+/g, ' ').trim() : '';
    if (text && window.__shown[window.__shown.length - 1] !== text) window.__shown.push(text);
  }).observe(root, { subtree: true, childList: true, characterData: true });
}"""


def ask_and_watch(page, url: str, question: str) -> list[str]:
    """Open the widget, ask, wait for the finished reply, and return each text the reply bubble showed."""
    page.goto(url)
    page.locator(".launch").click()
    page.get_by_role("textbox", name="Your message").wait_for()
    page.evaluate(WATCH_REPLY)
    open_and_ask(page, question)
    page.get_by_role("button", name="Helpful", exact=True).wait_for()  # the reply ended and was stored
    return [text for text in page.evaluate("window.__shown") if text.startswith("You said")]


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_provider_kind_streams_a_reply_into_the_widget_and_records_its_usage_and_cost(
    kind, app, host_pages, fresh, tab
):
    spec, server = KINDS[kind], fresh[kind]
    site = app.createsite(f"Shop {kind}", "--origin", host_pages.origin, *provider_args(kind, server))
    page = tab.page
    frames = record_frames(page)

    shown = ask_and_watch(page, host_pages.page(f"/kind-{kind}.html", app.tag(site)), QUESTION)

    # The reply grew in front of the visitor: several deltas, partial text on screen before the whole.
    assert bubbles(page, "assistant")[-1] == ANSWER
    deltas = [f["text"] for f in frames if f["type"] == "delta"]
    assert deltas == split_words(ANSWER)
    assert shown[-1] == ANSWER and len(shown) >= 2, shown
    assert all(ANSWER.startswith(text) for text in shown), shown
    [end] = [f for f in frames if f["type"] == "end"]
    assert (end["status"], end["text"]) == ("complete", ANSWER)

    # The request reached this kind's fake at the vendor's path, with the key in the vendor's header only.
    [request] = server.requests
    assert request.path == spec.path
    if spec.key_header:
        assert request.headers[spec.key_header] == spec.key_prefix + key_for(kind)
        assert key_for(kind) not in json.dumps(frames) and key_for(kind) not in widget_text(page)
    else:
        assert not {"authorization", "x-api-key", "x-goog-api-key"} & set(request.headers)
    assert server.completed == 1 and server.disconnects == 0
    assert all(not other.requests for name, other in fresh.items() if name != kind)

    # The stored reply says who answered, with the tokens the provider reported, and what it cost.
    [reply] = stored_replies(app, site)
    output_tokens = len(split_words(ANSWER))
    input_tokens = spec.input_tokens(request.json())
    assert reply["text"] == ANSWER and reply["status"] == "complete"
    assert (reply["provider"], reply["model"], reply["attempts"]) == (kind, spec.model, "1")
    assert (int(reply["input_tokens"]), int(reply["output_tokens"])) == (input_tokens, output_tokens)
    assert reply["usage_estimated"] == "False"
    cost = Decimal(reply["cost"])
    if kind in LOCAL:
        assert cost == 0
    else:
        assert cost == priced(kind, spec.model, input_tokens, output_tokens) and cost > 0


def test_when_anthropic_is_overloaded_the_openai_fallback_answers_through_the_widget(app, host_pages, fresh, tab):
    anthropic, openai = fresh["anthropic"], fresh["openai"]
    anthropic.queue(anthropic_error(529, "overloaded_error", "Overloaded"))
    fallback = f"openai,base_url={openai.origin}/v1,api_key={key_for('openai')}"
    site = app.createsite(
        "Shop chain", "--origin", host_pages.origin, *provider_args("anthropic", anthropic), "--fallback", fallback
    )
    page = tab.page
    frames = record_frames(page)

    shown = ask_and_watch(page, host_pages.page("/kind-chain.html", app.tag(site)), QUESTION)

    assert bubbles(page, "assistant")[-1] == ANSWER and len(shown) >= 2
    assert page.get_by_role("alert").count() == 0
    assert not [f for f in frames if f["type"] == "error"]
    # Anthropic was asked once (PROVIDER_MAX_ATTEMPTS=1 in the browser app), then OpenAI answered.
    assert [r.path for r in anthropic.requests] == ["/v1/messages"]
    [request] = openai.requests
    assert request.headers["authorization"] == f"Bearer {key_for('openai')}"
    assert request.json()["messages"][-1]["content"] == QUESTION
    [reply] = stored_replies(app, site)
    input_tokens, output_tokens = messages_size(request.json()), len(split_words(ANSWER))
    assert (reply["provider"], reply["model"], reply["attempts"], reply["status"]) == (
        "openai",
        "gpt-4o-mini",
        "2",
        "complete",
    )
    assert (int(reply["input_tokens"]), int(reply["output_tokens"])) == (input_tokens, output_tokens)
    assert Decimal(reply["cost"]) == priced("openai", "gpt-4o-mini", input_tokens, output_tokens) > 0

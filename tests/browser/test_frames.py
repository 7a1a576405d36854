"""The widget's side of every protocol frame, in Chromium, against a scripted protocol server."""

from __future__ import annotations

import json

import pytest

from tests.browser.conftest import bubbles, watch, widget_text
from tests.browser.scripted import ScriptedServer


@pytest.fixture(scope="module")
def server():
    instance = ScriptedServer()
    yield instance
    instance.stop()


@pytest.fixture
def scripted(server) -> ScriptedServer:
    server.reset()
    return server


def ask(page, text: str) -> None:
    if page.locator(".launch").get_attribute("aria-expanded") != "true":
        page.locator(".launch").click()
    box = page.get_by_role("textbox")
    box.fill(text)
    box.press("Enter")


def visit(page, host_pages, scripted, name: str, attrs: str = "", head: str = "", before: str = "") -> None:
    page.goto(host_pages.page(f"/{name}.html", before + scripted.tag(attrs), head=head))


def test_talk_to_a_person_shows_each_state_and_offers_email_when_no_one_answers(tab, host_pages, scripted):
    scripted.config |= {"state": "bot", "handoff_timeout": 1}
    scripted.answers["handoff"] = lambda f: [{"type": "status", "state": "waiting"}]
    page = tab.page
    visit(page, host_pages, scripted, "handoff")
    page.locator(".launch").click()
    page.get_by_role("button", name="Talk to a person").click()
    scripted.wait_for("handoff")
    page.locator(".note", has_text="Waiting for a person to join…").wait_for()
    assert not page.get_by_role("button", name="Talk to a person").is_visible()
    # No agent within handoff_timeout: an email field appears.
    email = page.get_by_role("textbox", name="Your email")
    email.fill("ana@example.com")
    email.press("Enter")
    assert scripted.wait_for("contact") == [{"type": "contact", "email": "ana@example.com"}]
    page.locator(".note", has_text="Thanks! We will reply by email.").wait_for()

    scripted.push({"type": "status", "state": "agent"})
    page.locator(".note", has_text="A person has joined the conversation.").wait_for()
    scripted.push({"type": "message", "role": "agent", "id": "a1", "text": "Hi, I'm *Sam*.", "author": "Sam"})
    page.locator(".agent em", has_text="Sam").wait_for()
    assert page.locator(".agent .who").inner_text() == "Sam"
    scripted.push({"type": "status", "state": "closed"})
    page.locator(".note", has_text="This conversation has ended.").wait_for()


def test_a_conversation_waiting_at_load_keeps_waiting_and_hides_the_button(tab, host_pages, scripted):
    scripted.config |= {"state": "waiting", "handoff_timeout": 600}
    page = tab.page
    visit(page, host_pages, scripted, "waiting")
    page.locator(".launch").click()
    page.locator(".assistant", has_text="Hello from the script").wait_for()
    assert not page.get_by_role("button", name="Talk to a person").is_visible()
    assert not page.get_by_role("textbox", name="Your email").is_visible()


def test_a_server_without_handoff_gets_no_talk_to_a_person_button(tab, host_pages, scripted):
    page = tab.page
    visit(page, host_pages, scripted, "nohandoff")
    page.locator(".launch").click()
    page.locator(".assistant", has_text="Hello from the script").wait_for()
    page.get_by_role("textbox").wait_for()
    assert page.get_by_role("button", name="Talk to a person").count() == 0


def test_agent_messages_while_closed_raise_the_unread_badge_and_reach_on_message(tab, host_pages, scripted):
    page = tab.page
    hooks = "<script>window.got = []; window.Parley = {q: [['on', ['message', m => got.push(m)]]]};</script>"
    visit(page, host_pages, scripted, "badge", before=hooks)
    page.evaluate("localStorage.setItem('parley:scripted', 'scripted-visitor-token')")
    page.reload()
    scripted.wait_for("hello")  # a returning visitor connects without opening the panel
    scripted.push({"type": "message", "role": "agent", "id": "a1", "text": "Are you there?", "author": "Sam"})
    scripted.push({"type": "message", "role": "agent", "id": "a2", "text": "Still here.", "author": "Sam"})
    page.locator(".badge", has_text="2").wait_for()
    assert page.locator(".launch").get_attribute("aria-label") == "Open chat (2 unread)"
    assert page.evaluate("got.map(m => [m.role, m.text, m.author])") == [
        ["agent", "Are you there?", "Sam"],
        ["agent", "Still here.", "Sam"],
    ]
    page.locator(".launch").click()
    assert not page.locator(".badge").is_visible()
    assert page.locator(".launch").get_attribute("aria-label") == "Close chat"
    assert bubbles(page, "agent") == ["Sam Are you there?", "Sam Still here."]


def test_feedback_thumbs_send_ratings_and_sources_show_as_safe_links(tab, host_pages, scripted):
    scripted.answers["message"] = lambda f: [
        {"type": "start", "reply_to": f["id"], "message": "r1"},
        {"type": "delta", "message": "r1", "text": "Returns take 30 days."},
        {
            "type": "end",
            "message": "r1",
            "status": "complete",
            "text": "Returns take 30 days.",
            "sources": [
                {"title": "Returns policy", "url": "https://shop.example/returns"},
                {"title": "Evil", "url": "javascript:window.__xss=1"},
            ],
        },
    ]
    page = tab.page
    visit(page, host_pages, scripted, "feedback")
    ask(page, "How long for returns?")
    source = page.get_by_role("link", name="Returns policy")
    source.wait_for()
    assert source.get_attribute("href") == "https://shop.example/returns"
    assert source.get_attribute("rel") == "noopener noreferrer"
    assert page.get_by_role("link", name="Evil").count() == 0 and "Evil" in widget_text(page)
    page.get_by_role("button", name="Not helpful").click()
    assert scripted.wait_for("feedback") == [{"type": "feedback", "message": "r1", "value": -1}]
    assert page.get_by_role("button", name="Not helpful").get_attribute("aria-pressed") == "true"
    page.get_by_role("button", name="Helpful", exact=True).click()
    assert scripted.wait_for("feedback", 2)[-1] == {"type": "feedback", "message": "r1", "value": 1}
    assert page.get_by_role("button", name="Not helpful").get_attribute("aria-pressed") == "false"


def test_history_shows_stored_feedback_sources_and_agent_authors(tab, host_pages, scripted):
    scripted.history = [
        {"id": "u1", "role": "user", "text": "Hi", "status": "complete"},
        {
            "id": "r1",
            "role": "assistant",
            "text": "Hello",
            "status": "complete",
            "feedback": 1,
            "sources": [{"title": "FAQ", "url": "https://shop.example/faq"}],
        },
        {"id": "a1", "role": "agent", "text": "Sam here", "status": "complete", "author": "Sam"},
    ]
    page = tab.page
    visit(page, host_pages, scripted, "history")
    page.locator(".launch").click()
    page.get_by_role("link", name="FAQ").wait_for()
    assert page.get_by_role("button", name="Helpful", exact=True).get_attribute("aria-pressed") == "true"
    assert page.locator(".agent .who").inner_text() == "Sam"


def test_markdown_becomes_elements_and_only_web_and_mail_links(tab, host_pages, scripted):
    text = (
        "Use *care* and __bold__ text.\n\n1. first\n2. second\n\n```\n<b>not bold</b>\n```\n"
        "Call `make run`, mail [us](mailto:help@shop.example), not [ftp](ftp://x.example) or [js](JaVaScRiPt:alert(1))."
    )
    scripted.answers["message"] = lambda f: [
        {"type": "start", "reply_to": f["id"], "message": "md"},
        {"type": "end", "message": "md", "status": "complete", "text": text},
    ]
    page = tab.page
    visit(page, host_pages, scripted, "markdown")
    ask(page, "format please")
    page.get_by_role("link", name="us").wait_for()
    reply = page.locator(".assistant", has_text="care")
    assert reply.locator("em").inner_text() == "care" and reply.locator("strong").inner_text() == "bold"
    assert reply.locator("ol li").all_inner_texts() == ["first", "second"]
    assert reply.locator("pre code").inner_text() == "<b>not bold</b>"
    assert reply.locator("p code").inner_text() == "make run"
    assert page.get_by_role("link", name="us").get_attribute("href") == "mailto:help@shop.example"
    assert reply.locator("a").count() == 1 and reply.locator("b").count() == 0


def test_quota_exceeded_is_shown_in_words(tab, host_pages, scripted):
    scripted.answers["message"] = lambda f: [
        {"type": "error", "code": "quota_exceeded", "message": "Quota reached.", "reply_to": f["id"]}
    ]
    page = tab.page
    visit(page, host_pages, scripted, "quota")
    ask(page, "one more?")
    page.locator(".err", has_text="This chat has reached its limit for now.").wait_for()
    page.get_by_role("button", name="Send").wait_for()  # not stuck in a streaming state


def test_rate_limited_disables_sending_until_retry_after_and_keeps_the_text(tab, host_pages, scripted):
    calls = []

    def limited_once(frame):
        calls.append(frame)
        if len(calls) == 1:
            return [
                {
                    "type": "error",
                    "code": "rate_limited",
                    "retry_after": 2,
                    "message": "Slow down.",
                    "reply_to": frame["id"],
                }
            ]
        return ScriptedServer.echo(frame)

    scripted.answers["message"] = limited_once
    page = tab.page
    visit(page, host_pages, scripted, "ratelimit")
    ask(page, "quick question")
    page.get_by_role("status").filter(has_text="Too many messages. You can send again in 2 s.").wait_for()
    assert page.get_by_role("button", name="Send").is_disabled()
    # Nothing was stored: the visitor's text is back in the box, not lost, and not shown as sent.
    assert page.get_by_role("textbox").input_value() == "quick question"
    assert bubbles(page, "user") == []
    page.get_by_role("textbox").press("Enter")
    assert len(scripted.frames("message")) == 1  # sending stays blocked
    page.wait_for_function(
        "!document.querySelector('parley-chat').shadowRoot.querySelector('.send').disabled", timeout=10_000
    )
    page.get_by_role("textbox").press("Enter")
    page.locator(".assistant", has_text="Echo: quick question").wait_for()
    assert [f["text"] for f in scripted.frames("message")] == ["quick question", "quick question"]


def test_after_a_provider_error_retry_resends_the_same_client_id(tab, host_pages, scripted):
    calls = []

    def fail_first(frame):
        calls.append(frame)
        if len(calls) == 1:
            return [
                {"type": "start", "reply_to": frame["id"], "message": "x1"},
                {"type": "error", "code": "provider_error", "message": "Try again.", "reply_to": frame["id"]},
                {"type": "end", "message": "x1", "status": "error", "text": ""},
            ]
        return ScriptedServer.echo(frame)

    scripted.answers["message"] = fail_first
    page = tab.page
    visit(page, host_pages, scripted, "retry")
    ask(page, "flaky")
    page.get_by_role("alert").filter(has_text="Something went wrong. Please try again.").wait_for()
    page.get_by_role("button", name="Retry").click()
    page.locator(".assistant", has_text="Echo: flaky").wait_for()
    first, second = scripted.frames("message")
    assert first == second  # the same client id and text: the server stores the message once
    assert bubbles(page, "user") == ["flaky"]
    assert page.get_by_role("alert").count() == 0


def test_the_stop_button_stops_a_streaming_reply(tab, host_pages, scripted):
    scripted.answers["message"] = lambda f: [
        {"type": "start", "reply_to": f["id"], "message": "slow"},
        {"type": "delta", "message": "slow", "text": "Counting: one"},
        30.0,
        {"type": "end", "message": "slow", "status": "complete", "text": "never"},
    ]
    page = tab.page
    visit(page, host_pages, scripted, "stop")
    ask(page, "count slowly")
    page.locator(".assistant", has_text="Counting: one").wait_for()
    page.get_by_role("button", name="Stop").click()
    scripted.wait_for("stop")
    page.locator(".note", has_text="Stopped.").wait_for()
    page.get_by_role("button", name="Send").wait_for()


def test_a_reply_cut_by_a_dropped_connection_resumes_from_history_without_duplicates(tab, host_pages, scripted):
    def cut(frame):
        if len(scripted.frames("message")) > 1:
            # The resend after reconnecting: the server replays the reply it stored, as the real one does.
            return [
                {"type": "start", "reply_to": frame["id"], "message": "cut"},
                {"type": "end", "message": "cut", "status": "stopped", "text": "Half an ans"},
            ]
        # The server stored the partial reply when the socket dropped; the next hello returns it.
        scripted.history = [
            {"id": "u1", "role": "user", "text": frame["text"], "status": "complete"},
            {"id": "cut", "role": "assistant", "text": "Half an ans", "status": "stopped"},
        ]
        return [
            {"type": "start", "reply_to": frame["id"], "message": "cut"},
            {"type": "delta", "message": "cut", "text": "Half an ans"},
            {"drop": True},
        ]

    scripted.answers["message"] = cut
    page = tab.page
    visit(page, host_pages, scripted, "cut")
    ask(page, "long question")
    page.locator(".assistant", has_text="Half an ans").wait_for()
    scripted.wait_for("hello", 2)
    first, again = scripted.wait_for("message", 2)
    assert first == again  # resent once, with the same client id
    page.get_by_role("button", name="Send").wait_for()
    page.locator(".assistant", has_text="Half an ans").wait_for()
    assert bubbles(page, "user") == ["long question"]
    assert [b for b in bubbles(page, "assistant") if "Half" in b] == ["Half an ans"]


def test_a_message_typed_while_offline_is_sent_once_after_reconnecting(tab, host_pages, scripted):
    page = tab.page
    visit(page, host_pages, scripted, "offline")
    page.locator(".launch").click()
    scripted.wait_for("hello")
    scripted.refuse = True
    tab.expect("WebSocket connection to")  # Chromium logs the refused reconnection attempts
    scripted.push({"drop": True})
    page.get_by_role("status").filter(has_text="Offline").wait_for()
    ask(page, "sent later")
    page.locator(".user.pend", has_text="sent later").wait_for()
    assert scripted.frames("message") == []
    scripted.refuse = False
    page.locator(".assistant", has_text="Echo: sent later").wait_for(timeout=40_000)
    assert [f["text"] for f in scripted.frames("message")] == ["sent later"]
    assert bubbles(page, "user") == ["sent later"]
    assert page.locator(".pend").count() == 0


def test_identify_queued_before_load_is_sent_after_every_ready(tab, host_pages, scripted):
    stub = (
        "<script>window.Parley={q:[]};['identify','open'].forEach(function(m){"
        "Parley[m]=function(){Parley.q.push([m,arguments])}});"
        "Parley.identify({email:'ana@example.com', name:'Ana', hash:'ab12'}); Parley.open();</script>"
    )
    page = tab.page
    visit(page, host_pages, scripted, "identify", before=stub)
    identify = scripted.wait_for("identify")
    assert identify == [{"type": "identify", "email": "ana@example.com", "name": "Ana", "hash": "ab12"}]
    assert [f["type"] for f in scripted.received[:2]] == ["hello", "identify"]
    scripted.push({"drop": True})
    scripted.wait_for("identify", 2)


@pytest.mark.parametrize(
    ("lang", "label", "send"),
    [
        ("en", "Open chat", "Send"),
        ("es", "Abrir chat", "Enviar"),
        ("fr", "Ouvrir le chat", "Envoyer"),
        ("de", "Chat öffnen", "Senden"),
        ("pt", "Abrir chat", "Enviar"),
    ],
)
def test_ui_text_follows_data_lang(tab, host_pages, scripted, lang, label, send):
    page = tab.page
    visit(page, host_pages, scripted, f"lang-{lang}", f'data-lang="{lang}"')
    assert page.locator(".launch").get_attribute("aria-label") == label
    page.locator(".launch").click()
    assert page.locator(".send").inner_text() == send


def test_ui_text_follows_the_browser_language_and_owner_overrides(browser, host_pages, scripted):
    context = browser.new_context(locale="de-DE")
    try:
        tab = watch(context)
        page = tab.page
        overrides = json.dumps({"send": "Los"}).replace('"', "&quot;")
        visit(page, host_pages, scripted, "browser-lang", f'data-strings="{overrides}"')
        assert page.locator(".launch").get_attribute("aria-label") == "Chat öffnen"
        page.locator(".launch").click()
        assert page.get_by_role("button", name="Los").is_visible()
        page.evaluate("Parley.strings({placeholder: 'Fragen Sie uns', title: 'Hilfe'})")
        assert page.get_by_role("textbox").get_attribute("placeholder") == "Fragen Sie uns"
        assert page.locator("header h2").inner_text() == "Hilfe"  # over the server's "Help desk"
        assert page.get_by_role("dialog").get_attribute("aria-label") == "Hilfe"
        tab.assert_clean()
    finally:
        context.close()


def test_configuration_from_the_tag_and_from_ready(tab, host_pages, scripted):
    scripted.config |= {
        "avatar": f"{scripted.origin}/avatar.png",
        "starters": ["Where is my order?", "Opening hours"],
        "color": "#0f766e",
    }
    page = tab.page
    host_pages_csp = f"img-src {scripted.origin}"  # the one addition an avatar needs
    visit(
        page,
        host_pages,
        scripted,
        "config",
        'data-position="left" data-color="#fde047" data-open="true"',
        head=f'<meta http-equiv="Content-Security-Policy" content="{host_pages_csp}">',
    )
    page.get_by_role("button", name="Where is my order?").wait_for()
    assert page.locator(".panel").is_visible()  # data-open
    assert page.locator("header h2").inner_text() == "Help desk"
    assert page.get_by_role("dialog").get_attribute("aria-label") == "Help desk"
    assert page.locator(".launch").bounding_box()["x"] == 20  # data-position="left"
    # The tag's colour wins over the server's; text on yellow is black for contrast.
    colours = page.evaluate(
        "() => { const s = getComputedStyle(document.querySelector('parley-chat').shadowRoot.querySelector('.launch'));"
        " return [s.backgroundColor, s.color]; }"
    )
    assert colours == ["rgb(253, 224, 71)", "rgb(0, 0, 0)"]
    page.wait_for_function(
        "document.querySelector('parley-chat').shadowRoot.querySelector('header img').naturalWidth === 1"
    )
    page.get_by_role("button", name="Opening hours").click()
    page.locator(".assistant", has_text="Echo: Opening hours").wait_for()
    assert not page.get_by_role("button", name="Where is my order?").is_visible()


def test_escape_closes_and_focus_returns_to_the_launcher(tab, host_pages, scripted):
    page = tab.page
    visit(page, host_pages, scripted, "escape")
    page.evaluate("Parley.open()")
    assert page.evaluate("document.activeElement.shadowRoot.activeElement.tagName") == "TEXTAREA"
    page.keyboard.press("Escape")
    assert not page.locator(".panel").is_visible()
    assert page.evaluate("document.activeElement.shadowRoot.activeElement.className") == "launch"
    controls = page.evaluate(
        "[...document.querySelector('parley-chat').shadowRoot.querySelectorAll('button')]"
        ".filter(b => !(b.getAttribute('aria-label') || b.textContent).trim()).length"
    )
    assert controls == 0  # every button has a name
    log = page.locator(".log")
    assert log.get_attribute("role") == "log" and log.get_attribute("aria-live") == "polite"


def test_motion_is_dropped_when_the_visitor_prefers_reduced_motion(browser, host_pages, scripted):
    seen = {}
    for motion in ("no-preference", "reduce"):
        context = browser.new_context(reduced_motion=motion)
        try:
            tab = watch(context)
            page = tab.page
            visit(page, host_pages, scripted, f"motion-{motion}")
            page.locator(".launch").click()
            seen[motion] = page.evaluate(
                "getComputedStyle(document.querySelector('parley-chat').shadowRoot.querySelector('.panel')).animationName"
            )
            tab.assert_clean()
        finally:
            context.close()
    assert seen == {"no-preference": "in", "reduce": "none"}


def test_a_new_visitor_opens_no_connection_until_the_panel_opens(tab, host_pages, scripted):
    page = tab.page
    sockets = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    visit(page, host_pages, scripted, "lazy")
    page.wait_for_load_state("load")
    page.locator(".launch").wait_for()  # the widget has run
    assert sockets == [] and scripted.hellos == 0
    page.locator(".launch").click()
    scripted.wait_for("hello")
    assert sockets == [f"ws://localhost:{scripted.port}/ws/chat/scripted/"]

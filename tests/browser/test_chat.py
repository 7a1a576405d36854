"""The widget on a customer's page, talking to the real app under daphne, in real Chromium."""

from __future__ import annotations

import json

from tests.browser.conftest import ARTIFACTS, bubbles, watch, widget_text
from tests.fakes.formats import openai_error, openai_reply


def open_and_ask(page, text: str) -> None:
    if page.locator(".launch").get_attribute("aria-expanded") != "true":
        page.locator(".launch").click()
    box = page.get_by_role("textbox", name="Your message")
    box.fill(text)
    box.press("Enter")


def history_over_websocket(app, key: str, token: str, origin: str) -> list[dict]:
    """Ask the server for the visitor's conversation, as a second client would see it."""
    code = (
        "import json; from backend.chat.services import open_session; from backend.sites.models import Site; "
        f"s = open_session(Site.objects.get(key={key!r}), {token!r}); "
        "print(json.dumps([[m['role'], m['text'], m['status']] for m in s.history]))"
    )
    return json.loads(app.shell(code).strip().splitlines()[-1])


def token_of(page, key: str) -> str:
    return page.evaluate("k => localStorage.getItem('parley:' + k)", key)


def test_a_visitor_asks_and_sees_the_reply_stream_in_then_finds_it_again_after_reload(
    app, site, host_pages, openai_server, tab
):
    openai_server.reset()
    openai_server.queue(
        openai_reply(
            ["We **do**", " ship", " to Norway.", "\n\n- fast", "\n- [tracked](https://ex.example/t)"], delay=0.4
        )
    )
    page = tab.page
    page.goto(host_pages.page("/plain.html", app.tag(site)))
    page.locator(".launch").click()
    assert page.locator(".panel").is_visible()
    open_and_ask(page, "Do you ship to Norway?")
    # Before the first token: the typing indicator; while streaming: a stop button.
    page.get_by_role("img", name="Typing…").wait_for()
    page.get_by_role("button", name="Stop").wait_for()
    page.locator(".assistant strong", has_text="do").wait_for()
    assert "tracked" not in widget_text(page)  # still streaming: part of the reply is on screen
    page.get_by_role("link", name="tracked").wait_for()
    page.get_by_role("button", name="Send").wait_for()
    link = page.get_by_role("link", name="tracked")
    assert link.get_attribute("target") == "_blank" and link.get_attribute("rel") == "noopener noreferrer"
    assert bubbles(page, "user") == ["Do you ship to Norway?"]
    assert page.locator(".assistant li").all_inner_texts() == ["fast", "tracked"]

    page.reload()
    page.locator(".launch").click()
    page.locator(".user", has_text="Do you ship to Norway?").wait_for()
    assert bubbles(page, "user") == ["Do you ship to Norway?"]
    assert "We do ship to Norway." in widget_text(page)


def test_when_the_server_restarts_mid_conversation_the_widget_reconnects_and_loses_nothing(
    app, site, host_pages, openai_server, tab
):
    openai_server.reset()
    page = tab.page
    page.goto(host_pages.page("/restart.html", app.tag(site)))
    open_and_ask(page, "first question")
    page.locator(".assistant", has_text="You said: first question").wait_for()
    page.get_by_role("button", name="Helpful", exact=True).wait_for()  # the reply ended and was stored

    app.stop()
    tab.expect("net::ERR_CONNECTION_REFUSED")  # Chromium logs each refused reconnection attempt
    page.get_by_role("status").filter(has_text="Offline").wait_for()
    # Typed while the server is down: kept on screen, sent once the connection is back.
    open_and_ask(page, "typed while offline")
    page.locator(".user.pend", has_text="typed while offline").wait_for()
    app.start()
    page.locator(".assistant", has_text="You said: typed while offline").wait_for(timeout=40_000)
    page.get_by_role("button", name="Send").wait_for()

    assert bubbles(page, "user") == ["first question", "typed while offline"]
    stored = history_over_websocket(app, site, token_of(page, site), host_pages.origin)
    assert stored == [
        ["user", "first question", "complete"],
        ["assistant", "You said: first question", "complete"],
        ["user", "typed while offline", "complete"],
        ["assistant", "You said: typed while offline", "complete"],
    ]
    asked = [r.json()["messages"][-1]["content"] for r in openai_server.requests]
    assert asked == ["first question", "typed while offline"]  # the offline message reached the provider once

    # Carry on after the restart: the same conversation continues.
    open_and_ask(page, "and after")
    page.locator(".assistant", has_text="You said: and after").wait_for()
    assert len(history_over_websocket(app, site, token_of(page, site), host_pages.origin)) == 6


def test_when_the_server_restarts_while_a_reply_streams_the_widget_keeps_the_partial_reply_once_and_carries_on(
    app, site, host_pages, openai_server, tab
):
    openai_server.reset()
    openai_server.queue(openai_reply(["Part one."] + [" more"] * 60, delay=0.3))
    page = tab.page
    page.goto(host_pages.page("/midstream.html", app.tag(site)))
    open_and_ask(page, "a long answer please")
    page.locator(".assistant", has_text="Part one. more").wait_for()

    app.stop()  # SIGTERM mid-reply: the server saves the partial reply as stopped before it exits
    tab.expect("net::ERR_CONNECTION_REFUSED")
    app.start()
    # The widget resends the interrupted message with its client id: the question is stored once and the
    # server answers with the reply it already has (the protocol's resend rule), calling no provider again.
    page.get_by_role("button", name="Send").wait_for(timeout=40_000)
    stored = history_over_websocket(app, site, token_of(page, site), host_pages.origin)
    assert [role for role, _, _ in stored] == ["user", "assistant"]
    assert stored[1][1].startswith("Part one. more") and stored[1][2] == "stopped"
    page.locator(".assistant", has_text="Part one. more").wait_for()
    assert bubbles(page, "user") == ["a long answer please"]

    # And the conversation carries on.
    openai_server.queue(openai_reply(["Carrying", " on."]))
    open_and_ask(page, "and now?")
    page.locator(".assistant", has_text="Carrying on.").wait_for()
    assert bubbles(page, "user") == ["a long answer please", "and now?"]
    # Two provider calls in all: the resend was answered from storage, not by asking again.
    assert [r.json()["messages"][-1]["content"] for r in openai_server.requests] == ["a long answer please", "and now?"]


def test_new_conversation_and_forget_me_start_fresh_on_a_shared_device(app, site, host_pages, openai_server, tab):
    openai_server.reset()
    page = tab.page
    page.goto(host_pages.page("/shared.html", app.tag(site)))
    open_and_ask(page, "my private question")
    page.locator(".assistant", has_text="You said: my private question").wait_for()
    first_token = token_of(page, site)

    page.get_by_role("button", name="New conversation").click()
    page.locator(".user").wait_for(state="detached")
    assert token_of(page, site) == first_token
    page.reload()
    page.locator(".launch").click()
    page.get_by_role("button", name="Send").wait_for()
    page.locator(".assistant", has_text="Hi! How can we help?").wait_for()
    assert bubbles(page, "user") == []

    page.get_by_role("button", name="Forget me").click()
    page.wait_for_function(
        "([k, old]) => localStorage.getItem('parley:' + k) && localStorage.getItem('parley:' + k) !== old",
        arg=[site, first_token],
    )
    # The old visitor's conversations are out of reach of this browser now.
    assert history_over_websocket(app, site, token_of(page, site), host_pages.origin) == []
    assert "my private question" not in widget_text(page)


def test_a_site_without_a_provider_says_so_in_words(app, host_pages, tab):
    key = app.createsite("Unset", "--origin", host_pages.origin)
    page = tab.page
    page.goto(host_pages.page("/unset.html", app.tag(key)))
    open_and_ask(page, "hello?")
    page.get_by_role("status").filter(has_text="The assistant is not set up yet.").wait_for()
    page.locator(".note", has_text="The assistant is not set up yet.").wait_for()


def test_xss_payloads_from_the_model_an_agent_and_the_visitor_never_execute(
    app, site, host_pages, openai_server, tab, context
):
    openai_server.reset()
    payload = (
        'Hi <img src=x onerror="window.__xss=1"> <script>window.__xss=2</script> '
        "[click me](javascript:window.__xss=3) [data](data:text/html,<script>window.__xss=4</script>) "
        "**<svg onload=window.__xss=5>** `<b>code</b>` [ok](https://safe.example/)"
    )
    openai_server.queue(openai_reply([payload[:40], payload[40:]]))
    page = tab.page
    page.goto(host_pages.page("/xss.html", app.tag(site)))
    open_and_ask(page, '<img src=x onerror="window.__xss=6"><script>window.__xss=7</script>')
    page.get_by_role("link", name="ok").wait_for()
    # An agent's message (author and text) stored in the conversation, shown from history on reload.
    token = token_of(page, site)
    app.shell(
        "from backend.chat.services import open_session; from backend.sites.models import Site; "
        f"s = open_session(Site.objects.get(key={site!r}), {token!r}); "
        "s.conversation.messages.create(role='agent', author='<img src=x onerror=window.__xss=8>', "
        "text='[x](javascript:window.__xss=9) <iframe src=javascript:window.__xss=10></iframe>')"
    )
    page.reload()
    page.locator(".launch").click()
    page.locator(".agent").wait_for()
    hrefs = page.evaluate(
        "[...document.querySelector('parley-chat').shadowRoot.querySelectorAll('a')].map(a => a.href)"
    )
    assert hrefs == ["https://safe.example/"]
    hostile = page.evaluate(
        "[...document.querySelector('parley-chat').shadowRoot.querySelectorAll('.log *')]"
        ".filter(n => [...n.attributes].some(a => a.name.startsWith('on') || /javascript:/i.test(a.value))"
        " || ['IMG', 'SCRIPT', 'IFRAME', 'OBJECT', 'EMBED'].includes(n.tagName)"
        " || (n.tagName === 'svg' && !n.closest('button'))).map(n => n.outerHTML)"
    )
    assert hostile == []
    assert page.evaluate("window.__xss") is None
    text = widget_text(page)
    # The markup shows as the text it is.
    assert "<script>window.__xss=7</script>" in text and "<svg onload=window.__xss=5>" in text, text
    assert "<iframe src=javascript:window.__xss=10></iframe>" in text
    assert page.evaluate("window.__xss") is None


def test_hostile_host_css_leaves_the_widget_intact(app, site, host_pages, openai_server, tab):
    openai_server.reset()
    page = tab.page
    hostile = "<style>* { all: unset !important; } div { display: none !important; } button { color: red }</style>"
    page.goto(host_pages.page("/hostile.html", app.tag(site), head=hostile))
    launcher = page.locator(".launch").bounding_box()
    assert launcher and launcher["width"] == 56 and launcher["height"] == 56
    assert launcher["x"] + 56 == 1280 - 20 and launcher["y"] + 56 == 800 - 20
    open_and_ask(page, "still there?")
    page.locator(".assistant", has_text="You said: still there?").wait_for()
    panel = page.locator(".panel").bounding_box()
    assert panel and panel["width"] == 370 and panel["height"] == 560
    styles = page.evaluate(
        "() => { const r = document.querySelector('parley-chat').shadowRoot;"
        " const s = getComputedStyle(r.querySelector('.panel')); const t = getComputedStyle(r.querySelector('textarea'));"
        " return [s.display, s.backgroundColor, t.fontSize, getComputedStyle(r.querySelector('.send')).color]; }"
    )
    assert styles == ["flex", "rgb(255, 255, 255)", "16px", "rgb(255, 255, 255)"]


def test_the_strict_csp_page_works_with_no_violation(app, site, host_pages, openai_server, context):
    openai_server.reset()
    # The policy, plus the one addition docs/embedding.md documents: the WebSocket origin
    # (Chromium does not let an http(s) source cover ws(s)).
    ws_origin = app.origin.replace("http", "ws")
    csp = f"default-src 'self'; script-src 'self' {app.origin}; connect-src {app.origin} {ws_origin}; style-src 'self'"
    url = host_pages.page(
        "/strict.html",
        '<script src="/stub.js"></script>' + app.tag(site),
        headers={"Content-Security-Policy": csp},
    )
    host_pages.add(
        "/strict-call.js",
        "Parley.on('message', function (m) { document.title = 'got ' + m.role; });",
        kind="text/javascript",
    )
    tab = watch(context)
    page = tab.page
    page.goto(url)
    page.locator(".launch").click()
    open_and_ask(page, "strict?")
    page.locator(".assistant", has_text="You said: strict?").wait_for()
    assert page.evaluate("window.__csp || []") == []
    # Nothing was added to the host page's DOM but the widget's own element, and no style attribute.
    assert page.evaluate("document.querySelectorAll('style, [style]').length") == 0
    tab.assert_clean()


def test_calls_queued_before_the_script_loads_are_replayed(app, site, host_pages, openai_server, tab):
    openai_server.reset()
    page = tab.page
    host_pages.add(
        "/queued-calls.js",
        "window.seen = []; Parley.on('message', function (m) { seen.push(m.role + ': ' + m.text); }); Parley.open();",
        kind="text/javascript",
    )
    page.goto(
        host_pages.page(
            "/queued.html",
            '<script src="/stub.js"></script><script src="/queued-calls.js"></script>' + app.tag(site),
        )
    )
    page.get_by_role("textbox", name="Your message").wait_for()
    assert page.locator(".panel").is_visible()
    open_and_ask(page, "queued")
    page.wait_for_function("window.seen.length === 1")
    assert page.evaluate("window.seen") == ["assistant: You said: queued"]
    # The widget adds exactly one global.
    added = page.evaluate(
        "() => { const f = document.createElement('iframe'); document.body.append(f);"
        " const base = new Set(Object.keys(f.contentWindow)); f.remove();"
        " return Object.keys(window).filter(k => !base.has(k) && k !== 'seen' && k !== '__csp'); }"
    )
    assert added == ["Parley"]


def test_on_a_phone_the_panel_fills_the_screen_and_inputs_do_not_zoom(app, site, host_pages, openai_server, browser):
    openai_server.reset()
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        tab = watch(context)
        page = tab.page
        page.goto(host_pages.page("/phone.html", app.tag(site)))
        open_and_ask(page, "on my phone")
        page.locator(".assistant", has_text="You said: on my phone").wait_for()
        # Full screen: the panel covers exactly what the visitor sees (the visual viewport), once its opening
        # animation (which slides it up 8px) has settled.
        page.wait_for_function(
            "() => { const r = document.querySelector('parley-chat').shadowRoot.querySelector('.panel')"
            ".getBoundingClientRect(); return r.left === 0 && r.width === 390 && Math.round(r.height) === 844"
            " && Math.round(r.top - visualViewport.offsetTop) === 0; }"
        )
        covered = page.evaluate(
            "() => { const r = document.querySelector('parley-chat').shadowRoot.querySelector('.panel')"
            ".getBoundingClientRect(), v = visualViewport;"
            " return [r.left, r.width, Math.round(r.top - v.offsetTop), Math.round(r.height - v.height), Math.round(v.height)]; }"
        )
        assert covered == [0, 390, 0, 0, 844]
        sizes = page.evaluate(
            "[...document.querySelector('parley-chat').shadowRoot.querySelectorAll('textarea, input')]"
            ".map(n => parseFloat(getComputedStyle(n).fontSize))"
        )
        assert sizes and min(sizes) >= 16
        page.screenshot(path=str(ARTIFACTS / "widget-mobile-390x844.png"))
        assert not page.locator(".launch").is_visible()  # it would cover the send button
        # When the visual viewport shrinks (an on-screen keyboard, a pinch zoom), the panel follows it,
        # so the input stays in view. Chromium's page scale shrinks the visual viewport the same way.
        cdp = context.new_cdp_session(page)
        cdp.send("Emulation.setPageScaleFactor", {"pageScaleFactor": 2})
        page.wait_for_function("visualViewport.height < 500")
        page.wait_for_function(
            "() => { const r = document.querySelector('parley-chat').shadowRoot.querySelector('.panel')"
            ".getBoundingClientRect(); return Math.abs(r.height - visualViewport.height) < 1"
            " && Math.abs(r.top - visualViewport.offsetTop) < 1; }"
        )
        assert page.get_by_role("textbox").bounding_box()["y"] < page.evaluate("visualViewport.height")
        tab.assert_clean()
    finally:
        context.close()


CONTRAST = """() => {
  const r = document.querySelector('parley-chat').shadowRoot;
  const rgb = c => c.match(/[\\d.]+/g).map(Number);
  const lum = c => { const v = rgb(c).slice(0, 3).map(x => { x /= 255; return x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2]; };
  const bg = n => { for (; n; n = n.parentElement || n.getRootNode().host) { const c = getComputedStyle(n).backgroundColor;
    if (rgb(c)[3] !== 0 && c !== 'rgba(0, 0, 0, 0)') return c; } return 'rgb(255, 255, 255)'; };
  const out = {};
  for (const sel of ['header h2', '.user', '.assistant', '.assistant a', '.note', 'textarea', '.send', '.act button', '.launch', '.bar']) {
    const n = r.querySelector(sel); if (!n) continue;
    const a = lum(getComputedStyle(n).color), b = lum(bg(n));
    out[sel] = Math.round((Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05) * 100) / 100;
  }
  return out;
}"""


def contrast_checked(page) -> dict:
    ratios = page.evaluate(CONTRAST)
    assert len(ratios) >= 8, ratios
    assert all(value >= 4.5 for value in ratios.values()), ratios
    return ratios


def test_colours_meet_wcag_aa_in_light_and_dark_mode(app, site, host_pages, openai_server, browser):
    for scheme in ("light", "dark"):
        openai_server.reset()
        openai_server.queue(openai_reply(["See [the guide](https://ex.example/g)."]))
        context = browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme=scheme)
        try:
            tab = watch(context)
            page = tab.page
            page.goto(host_pages.page(f"/{scheme}.html", app.tag(site)))
            open_and_ask(page, scheme)
            page.get_by_role("link", name="the guide").wait_for()
            page.get_by_role("button", name="Stop").wait_for(state="detached")
            # A note in the log, as after "Stop": the muted text colour is checked too.
            page.get_by_role("button", name="New conversation").focus()
            page.evaluate(
                "document.querySelector('parley-chat').shadowRoot.querySelector('.log')"
                ".append(Object.assign(document.createElement('div'), {className: 'note', textContent: 'Stopped.'}))"
            )
            ratios = contrast_checked(page)
            assert set(ratios) >= {"header h2", ".user", ".assistant", ".assistant a", ".note", "textarea", ".send"}
            page.screenshot(path=str(ARTIFACTS / f"widget-{scheme}.png"))
            tab.assert_clean()
        finally:
            context.close()


def test_the_whole_flow_works_by_keyboard_alone(app, site, host_pages, openai_server, tab):
    openai_server.reset()
    page = tab.page
    page.goto(host_pages.page("/keyboard.html", app.tag(site)))
    page.keyboard.press("Tab")  # the host page's link
    page.keyboard.press("Tab")  # the launcher
    assert page.evaluate("document.activeElement.shadowRoot.activeElement.className") == "launch"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.shadowRoot.activeElement.tagName") == "TEXTAREA"
    page.keyboard.type("by keyboard")
    page.keyboard.press("Enter")
    page.locator(".assistant", has_text="You said: by keyboard").wait_for()
    page.get_by_role("button", name="Helpful", exact=True).first.wait_for()
    # Tab forward from the textarea until the thumbs-up, then press it with Space.
    for _ in range(30):
        page.keyboard.press("Shift+Tab")
        if page.evaluate("document.activeElement.shadowRoot.activeElement.getAttribute('aria-label')") == "Helpful":
            break
    page.keyboard.press("Space")
    assert page.get_by_role("button", name="Helpful", exact=True).get_attribute("aria-pressed") == "true"
    page.keyboard.press("Escape")
    assert not page.locator(".panel").is_visible()
    assert page.evaluate("document.activeElement.shadowRoot.activeElement.className") == "launch"
    assert page.locator(".launch").get_attribute("aria-expanded") == "false"


def test_a_message_over_the_length_limit_is_refused_in_words_and_the_text_kept(app, site, host_pages, tab):
    page = tab.page
    page.goto(host_pages.page("/long.html", app.tag(site)))
    too_long = "x" * 4001
    open_and_ask(page, too_long)
    page.locator(".note", has_text="Your message is 4,001 characters; the limit is 4,000.").wait_for()
    assert page.get_by_role("textbox", name="Your message").input_value() == too_long
    assert bubbles(page, "user") == []
    open_and_ask(page, "short now")
    page.locator(".assistant", has_text="You said: short now").wait_for()


def test_after_a_provider_failure_retry_gets_the_answer_and_stores_the_question_once(
    app, site, host_pages, openai_server, tab
):
    openai_server.reset()
    openai_server.queue(openai_error(500, "The server had an error.", "server_error"))
    page = tab.page
    page.goto(host_pages.page("/retry.html", app.tag(site)))
    open_and_ask(page, "will this work?")
    page.get_by_role("alert").filter(has_text="Something went wrong. Please try again.").wait_for()
    page.get_by_role("button", name="Retry").click()
    page.locator(".assistant", has_text="You said: will this work?").wait_for()
    assert page.get_by_role("alert").count() == 0
    assert bubbles(page, "user") == ["will this work?"]
    stored = history_over_websocket(app, site, token_of(page, site), host_pages.origin)
    assert stored == [
        ["user", "will this work?", "complete"],
        ["assistant", "You said: will this work?", "complete"],
    ]

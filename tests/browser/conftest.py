"""Real Chromium (Debian's, driven by Playwright) against the real app or a scripted protocol server.

Host pages come from a small threaded HTTP server on 127.0.0.1, while the app is reached as localhost:
two origins, as on a customer's site. Without a Chromium these tests are skipped with a clear message,
unless PARLEY_REQUIRE_BROWSER=1 (set by .ci/run), which turns a missing browser into a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.processes import ROOT, daphne, free_port, manage, server_env

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
CHROMIUM_ARGS += ["--disable-sync", "--no-first-run"]
REQUIRED = os.environ.get("PARLEY_REQUIRE_BROWSER") == "1"


def find_chromium() -> str | None:
    """Return Chromium's path: PARLEY_CHROMIUM when set (and only it), else Debian's."""
    chosen = os.environ.get("PARLEY_CHROMIUM")
    candidates = [chosen] if chosen else ["/usr/bin/chromium", shutil.which("chromium")]
    return next((c for c in candidates if c and Path(c).exists()), None)


def browser_missing() -> str | None:
    """Say why no browser can run here, or None when one can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed"
    if find_chromium() is None:
        return "no Chromium found (install Debian's chromium, or set PARLEY_CHROMIUM)"
    return None


def pytest_collection_modifyitems(config, items):
    reason = browser_missing()
    here = Path(__file__).parent
    ours = [item for item in items if Path(str(item.fspath)).is_relative_to(here)]
    for item in ours:
        item.add_marker(pytest.mark.browser)
        if reason and not REQUIRED:
            item.add_marker(pytest.mark.skip(reason=f"BROWSER TESTS SKIPPED: {reason}"))
    # Run last: Playwright's sync API keeps an event loop running in this thread while the shared
    # browser lives, which would break later tests that call asyncio.run().
    items[:] = [item for item in items if item not in ours] + ours


def pytest_terminal_summary(terminalreporter):
    reason = browser_missing()
    if reason and not REQUIRED:
        terminalreporter.write_line(
            f"BROWSER TESTS SKIPPED: {reason}. They run whenever Chromium is present; "
            "PARLEY_REQUIRE_BROWSER=1 makes this a failure.",
            yellow=True,
            bold=True,
        )


# -- the browser ----------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def browser():
    reason = browser_missing()
    if reason:
        pytest.fail(f"PARLEY_REQUIRE_BROWSER=1 but {reason}")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=find_chromium(), args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@dataclass
class Watched:
    """A page plus everything worrying the browser reported while it ran."""

    page: object
    errors: list[str] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)

    def expect(self, fragment: str) -> None:
        """Tolerate console errors containing the fragment (the browser's own log of a planned outage)."""
        self.expected.append(fragment)

    def assert_clean(self) -> None:
        unexpected = [e for e in self.errors if not any(f in e for f in self.expected)]
        assert unexpected == [], unexpected


def watch(context) -> Watched:
    page = context.new_page()
    watched = Watched(page)
    page.on("console", lambda m: m.type == "error" and watched.errors.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: watched.errors.append(f"pageerror: {e}"))
    # Collected before any page script runs; init scripts are not subject to the page's CSP.
    page.add_init_script(
        "document.addEventListener('securitypolicyviolation', e => "
        "(window.__csp = window.__csp || []).push(e.violatedDirective + ' ' + e.blockedURI));"
    )
    return watched


@pytest.fixture
def context(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US")
    yield context
    context.close()


@pytest.fixture
def tab(context) -> Iterator[Watched]:
    """A fresh page; the test fails if the console reported an error."""
    watched = watch(context)
    yield watched
    watched.assert_clean()


# -- host pages on another origin -----------------------------------------------------------------------
class HostPages:
    """Serve registered pages from 127.0.0.1: the customer's website."""

    def __init__(self) -> None:
        self.pages: dict[str, tuple[bytes, str, dict[str, str]]] = {}
        pages = self.pages

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                body, kind, headers = pages.get(self.path.split("?")[0], (b"not found", "text/plain", {}))
                self.send_response(200 if self.path.split("?")[0] in pages else 404)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.origin = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, path: str, body: str, headers: dict[str, str] | None = None, kind: str = "text/html") -> str:
        self.pages[path] = (body.encode(), kind, headers or {})
        return self.origin + path

    def page(self, path: str, widget: str, *, head: str = "", body: str = "", headers: dict | None = None) -> str:
        """Add an HTML page that embeds the widget tag given, and return its URL."""
        html = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Host page</title>{head}</head><body>"
            f'<h1>A customer\'s page</h1><p><a href="#top">A link before the widget</a></p>{body}'
            f"{widget}</body></html>"
        )
        return self.add(path, html, headers)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def host_pages() -> Iterator[HostPages]:
    pages = HostPages()
    pages.add("/favicon.ico", "", kind="image/x-icon")
    pages.add(
        "/stub.js",
        'window.Parley=window.Parley||{q:[]};"open close identify on strings".split(" ").forEach('
        "function(m){Parley[m]=Parley[m]||function(){Parley.q.push([m,arguments])}});",
        kind="text/javascript",
    )
    yield pages
    pages.stop()


# -- the real app under daphne --------------------------------------------------------------------------
class App:
    """The real server (daphne, a temp SQLite database), restartable on the same port."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.port = free_port()
        self.origin = f"http://localhost:{self.port}"
        self._process: contextlib.ExitStack | None = None

    def start(self) -> None:
        self._process = contextlib.ExitStack()
        self._process.enter_context(daphne(self.env, self.port))

    def stop(self) -> None:
        if self._process:
            self._process.close()
            self._process = None

    def createsite(self, name: str, *args: str) -> str:
        return json.loads(manage(self.env, "createsite", name, *args))["key"]

    def tag(self, key: str, attrs: str = "") -> str:
        return f'<script src="{self.origin}/widget.js" data-site="{key}" {attrs} async></script>'

    def shell(self, code: str) -> str:
        return manage(self.env, "shell", "-c", code)


@pytest.fixture(scope="module")
def app(tmp_path_factory, openai_server) -> Iterator[App]:
    path = tmp_path_factory.mktemp("app") / "browser.sqlite3"
    # Quiet logs: tests/processes.py pipes daphne's stderr without reading it, and a full pipe would stall it.
    # One provider call per reply, as in the core tests: each test scripts exactly the answers it expects.
    env = server_env(f"sqlite:///{path}", LOG_LEVEL="WARNING", PROVIDER_MAX_ATTEMPTS="1")
    manage(env, "migrate", "--noinput", "-v0")
    instance = App(env)
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def site(app, host_pages, openai_server) -> str:
    """A site allowed on the host pages' origin whose chat goes to the fake OpenAI server."""
    return app.createsite(
        "Shop",
        "--origin",
        host_pages.origin,
        "--provider",
        "openai",
        "--base-url",
        f"{openai_server.origin}/v1",
        "--api-key",
        "sk-browser-test-key",
    )


# -- shadow DOM helpers ---------------------------------------------------------------------------------
def widget_text(page) -> str:
    return page.evaluate("document.querySelector('parley-chat').shadowRoot.querySelector('.log').innerText")


def bubbles(page, role: str) -> list[str]:
    """Return the text of each message bubble of a role, whitespace collapsed."""
    return page.evaluate(
        "r => [...document.querySelector('parley-chat').shadowRoot.querySelectorAll('.log .m.' + r)]"
        ".map(n => n.innerText.replace(/\\s+/g, ' ').trim())",
        role,
    )

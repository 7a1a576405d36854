"""What `make run` does, with real processes: migrate, setupdemo, daphne; then a visitor with no provider
key asks about Parley and follows the link. And importkb as a real command line."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import httpx
import websockets

from tests.processes import ROOT, daphne, free_port, manage, server_env

NO_KEYS = {"OPENAI_API_KEY": "", "MISTRAL_API_KEY": "", "DEEPSEEK_API_KEY": ""}


async def ask(port: int, text: str) -> dict:
    url = f"ws://127.0.0.1:{port}/ws/chat/demo/"
    async with websockets.connect(url, origin=f"http://127.0.0.1:{port}") as ws:
        await ws.send(json.dumps({"type": "hello"}))
        ready = json.loads(await ws.recv())
        assert ready["config"]["available"] is True
        await ws.send(json.dumps({"type": "message", "id": "m1", "text": text}))
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if frame["type"] == "end":
                return frame


def test_make_run_with_no_key_answers_from_the_help_corpus_with_a_working_link(tmp_path):
    port = free_port()
    env = server_env(f"sqlite:///{tmp_path / 'demo.sqlite3'}", PORT=str(port), **NO_KEYS)
    env.pop("PUBLIC_URL", None)
    manage(env, "migrate", "--noinput", "-v0")
    out = manage(env, "setupdemo")
    assert "answers from the built-in help articles" in out
    again = manage(env, "setupdemo")
    assert "Help articles" not in again  # the second run imports nothing
    with daphne(env, port) as port:
        end = asyncio.run(ask(port, "How do I embed the widget?"))
        link = f"http://127.0.0.1:{port}/help/embedding-the-widget/"
        assert end["status"] == "complete"
        assert end["sources"] == [{"title": "Embedding the chat widget on your website", "url": link}]
        assert f"({link})" in end["text"]
        page = httpx.get(link)
        assert page.status_code == 200 and "Embedding the chat widget" in page.text
        honest = asyncio.run(ask(port, "Who won the football world cup in 1998?"))
        assert "couldn't find the answer" in honest["text"] and "person" in honest["text"]
        assert "sources" not in honest


def test_importkb_on_the_command_line_reports_and_exits_non_zero(tmp_path):
    env = server_env(f"sqlite:///{tmp_path / 'cli.sqlite3'}")
    manage(env, "migrate", "--noinput", "-v0")
    key = json.loads(manage(env, "createsite", "Shop", "--origin", "https://shop.example"))["key"]
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.md").write_text("# Good\n\nFine.")
    (docs / "bad.md").write_bytes(b"# Bad \xff\xfe")

    def importkb(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "manage.py", "importkb", *args]
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)

    result = importkb("--", key, str(docs))
    assert result.returncode == 1
    assert "1 created, 0 updated, 0 unchanged, 1 skipped for site 'Shop'." in result.stdout
    assert f"skipped {docs / 'bad.md'}: not UTF-8 text" in result.stderr
    unknown = importkb("no-such-site", str(docs))
    assert unknown.returncode == 1 and "No site has the key 'no-such-site'" in unknown.stderr
    missing = importkb("--", key, str(tmp_path / "nowhere"))
    assert missing.returncode == 1 and "No such file or folder" in missing.stderr
    (docs / "bad.md").unlink()
    clean = importkb("--", key, str(docs))
    assert clean.returncode == 0
    assert "0 created, 0 updated, 1 unchanged, 0 skipped" in clean.stdout

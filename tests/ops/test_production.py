"""Production settings: `check --deploy` is clean, HTTPS is enforced, logs are JSON without personal data."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import httpx
import pytest

from tests.fakes.formats import openai_reply
from tests.ops.production import production_env
from tests.ops.servers import Daphne, Visitor
from tests.processes import PROVIDER_KEY, ROOT, create_site, manage

EMAIL = "jane.doe@example.org"


def check_deploy(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    result = check_deploy(production_env(f"sqlite:///{tmp_path / 'db.sqlite3'}"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_fails_when_hsts_is_left_off(tmp_path):
    env = production_env(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    del env["SECURE_HSTS_SECONDS"]
    result = check_deploy(env)
    assert result.returncode != 0
    assert "security.W004" in result.stdout + result.stderr


def test_production_refuses_an_unparseable_log_format(tmp_path):
    result = check_deploy(production_env(f"sqlite:///{tmp_path / 'db.sqlite3'}", LOG_FORMAT="xml"))
    assert result.returncode != 0
    assert "LOG_FORMAT must be json or plain" in result.stderr


@pytest.fixture
def production(tmp_path, fake_openai):
    env = production_env(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    manage(env, "migrate", "--noinput", "-v0")
    key = create_site(env, fake_openai.origin)
    # -v 0: no access log (it would carry visitors' IP addresses); the app's own logs stay on.
    with Daphne(env, tmp_path / "daphne.log", "-v", "0") as server:
        yield server, key


def test_production_redirects_http_to_https_sends_hsts_and_leaves_healthz_reachable(production):
    server, _ = production
    base = f"http://127.0.0.1:{server.port}"
    plain = httpx.get(f"{base}/")
    assert plain.status_code == 301 and plain.headers["location"].startswith("https://")
    secure = httpx.get(f"{base}/", headers={"X-Forwarded-Proto": "https"})
    assert secure.status_code == 200
    assert secure.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains; preload"
    assert secure.headers["x-content-type-options"] == "nosniff"
    assert secure.headers["x-frame-options"] == "DENY"
    health = httpx.get(f"{base}/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"


async def chat_with_personal_data(server: Daphne, key: str) -> dict:
    async with Visitor(server.url(key)) as visitor:
        frames = await visitor.ask("m1", f"My email is {EMAIL}, where is my order?")
        assert frames[-1]["type"] == "end", frames
        return visitor.ready


def test_production_logs_are_json_lines_with_site_and_conversation_and_no_personal_data(production, fake_openai):
    server, key = production
    fake_openai.queue(openai_reply(["Let", " me", " check", "."]))
    ready = asyncio.run(chat_with_personal_data(server, key))
    server.stop()
    lines = [line for line in server.log().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    call = next(record for record in records if record["message"].startswith("provider call:"))
    assert call["level"] == "INFO"
    assert call["site"] == key
    assert call["conversation"] == ready["conversation"]
    assert len(call["request_id"]) == 32
    log = server.log()
    assert EMAIL not in log and "where is my order" not in log
    assert PROVIDER_KEY not in log
    assert ready["visitor"] not in log


def test_log_records_lose_emails_and_keys_whatever_a_caller_formats_into_them():
    import logging

    from backend.ops.context import ContextFilter

    record = logging.LogRecord(
        "x",
        logging.WARNING,
        __file__,
        1,
        "visitor %s sent key %s with %s",
        (EMAIL, "sk-live-abcdef123456", "Bearer abc.def"),
        None,
    )
    assert ContextFilter().filter(record)
    assert record.getMessage() == "visitor [email] sent key [secret] with Bearer [secret]"

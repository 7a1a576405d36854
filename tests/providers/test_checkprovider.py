"""`manage.py checkprovider SITE_KEY`: who answered and what it cost, or exactly why not, never the key."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from backend.sites.provisioning import ProviderSpec
from tests.fakes.formats import anthropic_error, anthropic_reply, gemini_bad_key, gemini_reply, openai_error
from tests.processes import ROOT, server_env
from tests.providers.conftest import ANTHROPIC_KEY, GEMINI_KEY, make_site, spec_for

pytestmark = pytest.mark.django_db


def check(site_key: str, *options: str) -> str:
    out = io.StringIO()
    # "--": a site key may start with "-" (URL-safe base64), which argparse would read as an option.
    call_command("checkprovider", *options, "--", site_key, stdout=out)
    return out.getvalue()


def test_it_prints_who_answered_with_tokens_and_cost(servers):
    servers["anthropic"].queue(anthropic_reply(["Yes", ", I", " can."], usage=(20, 4)))
    site = make_site(spec_for("anthropic", servers["anthropic"], model="claude-sonnet-4-6"))
    output = check(site.key)
    # claude-sonnet-4-6: 3 USD per million in, 15 out: 20 * 3 + 4 * 15 = 120 per million
    assert "OK anthropic claude-sonnet-4-6 answered in " in output
    assert "tokens 20 in / 4 out;" in output and "cost 0.000120 USD" in output
    assert "Yes, I can." in output
    sent = servers["anthropic"].requests[0].json()
    assert sent["max_tokens"] == 32 and sent["messages"][0]["role"] == "user"
    assert ANTHROPIC_KEY not in output


def test_it_shows_each_attempt_when_the_chain_falls_back(servers):
    servers["anthropic"].queue(anthropic_error(401, "authentication_error", "invalid x-api-key"))
    site = make_site(spec_for("anthropic", servers["anthropic"]), spec_for("ollama", servers["ollama"]))
    output = check(site.key)
    assert "attempt 1: anthropic claude-haiku-4-5" in output and "invalid x-api-key" in output
    assert "attempt 2: ollama llama3.2" in output and "OK ollama llama3.2 answered" in output


def test_the_summary_chain_is_checked_on_its_own(servers):
    servers["gemini"].queue(gemini_reply(["Fine", "."], usage=(10, 2), thoughts=5))
    site = make_site(
        spec_for("anthropic", servers["anthropic"]),
        spec_for("gemini", servers["gemini"], model="gemini-2.5-flash-lite", purpose="summary"),
    )
    output = check(site.key, "--purpose", "summary")
    assert "OK gemini gemini-2.5-flash-lite answered" in output and "tokens 10 in / 7 out" in output
    assert servers["anthropic"].requests == []


def test_a_site_without_a_summary_chain_checks_its_chat_chain_and_says_so(servers):
    site = make_site(spec_for("ollama", servers["ollama"]))
    output = check(site.key, "--purpose", "summary")
    assert "summaries use the chat chain" in output and "OK ollama" in output


def test_when_every_provider_fails_it_gives_each_exact_reason(servers):
    servers["gemini"].queue(gemini_bad_key())
    servers["openai"].queue(openai_error(404, "The model `gpt-9` does not exist", "invalid_request_error"))
    site = make_site(spec_for("gemini", servers["gemini"]), spec_for("openai", servers["openai"], model="gpt-9"))
    with pytest.raises(CommandError) as failure:
        check(site.key)
    message = str(failure.value)
    assert "gemini answered 400: API key not valid" in message
    assert "openai answered 404: The model `gpt-9` does not exist" in message
    assert GEMINI_KEY not in message


@pytest.mark.parametrize(
    ("args", "message"),
    [(["no-such-site"], "no site has the key 'no-such-site'"), (["SITE", "--purpose", "email"], "invalid choice")],
)
def test_bad_arguments_fail_clearly(prices, args, message):
    site = make_site(ProviderSpec(kind="ollama"))
    key, *options = [site.key if a == "SITE" else a for a in args]
    with pytest.raises(CommandError, match=message):
        check(key, *options)


def test_a_site_without_providers_is_reported(prices):
    site = make_site()
    with pytest.raises(CommandError, match="Acme has no enabled chat provider"):
        check(site.key)


def test_a_failed_check_exits_non_zero_with_the_reason_on_stderr_and_no_key(tmp_path, servers):
    env = server_env(f"sqlite:///{tmp_path / 'check.sqlite3'}")
    run = [sys.executable, "manage.py"]
    subprocess.run([*run, "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    created = subprocess.run(
        [
            *run,
            "createsite",
            "Acme",
            "--origin",
            "https://acme.example",
            "--provider",
            "anthropic",
            "--api-key",
            ANTHROPIC_KEY,
            "--base-url",
            servers["anthropic"].origin,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    key = json.loads(created.stdout)["key"]
    servers["anthropic"].queue(anthropic_error(403, "permission_error", "Your key cannot use this model"))
    # "--": a site key may start with "-" (URL-safe base64).
    result = subprocess.run([*run, "checkprovider", "--", key], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert "anthropic answered 403: Your key cannot use this model" in result.stderr
    assert ANTHROPIC_KEY not in result.stderr + result.stdout
    servers["anthropic"].reset()
    result = subprocess.run([*run, "checkprovider", "--", key], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0 and "OK anthropic claude-haiku-4-5 answered" in result.stdout


def test_a_model_without_a_price_is_pointed_out(servers):
    site = make_site(spec_for("openai", servers["openai"], model="gpt-unlisted"))
    output = check(site.key)
    assert "cost 0 USD" in output
    assert "No price for openai/gpt-unlisted: add one in the admin (Prices)." in output

"""createsite builds a chat chain and a summary chain, and refuses bad provider arguments before writing."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from backend.providers.models import ProviderConfig, endpoints_for
from backend.sites.models import Site

pytestmark = pytest.mark.django_db

ORIGIN = ["--origin", "https://acme.example"]
PRIMARY = ["--provider", "anthropic", "--api-key", "sk-ant-primary-1111"]


def createsite(*args: str) -> Site:
    out = io.StringIO()
    call_command("createsite", "Acme", *args, stdout=out)
    return Site.objects.get(key=json.loads(out.getvalue())["key"])


def test_fallbacks_and_summary_providers_make_two_ordered_chains(monkeypatch):
    monkeypatch.setenv("ACME_GEMINI_KEY", "AIza-from-env-7777")
    site = createsite(
        *ORIGIN,
        *PRIMARY,
        "--fallback",
        "openai,api_key=sk-openai-2222,model=gpt-5-mini",
        "--fallback",
        "ollama,base_url=http://gpu.lan:11434,model=qwen3,first_byte_timeout=60",
        "--summary",
        "gemini,api_key_env=ACME_GEMINI_KEY,model=gemini-2.5-flash-lite",
        "--summary",
        "lmstudio",
    )
    chat = endpoints_for(site, "chat")
    assert [(e.kind, e.model, e.api_key) for e in chat] == [
        ("anthropic", "claude-haiku-4-5", "sk-ant-primary-1111"),
        ("openai", "gpt-5-mini", "sk-openai-2222"),
        ("ollama", "qwen3", ""),
    ]
    assert chat[2].base_url == "http://gpu.lan:11434" and chat[2].first_byte_timeout == 60
    summary = endpoints_for(site, "summary")
    assert [(e.kind, e.model, e.api_key) for e in summary] == [
        ("gemini", "gemini-2.5-flash-lite", "AIza-from-env-7777"),
        ("lmstudio", "local-model", ""),
    ]
    positions = list(site.provider_configs.order_by("purpose", "position").values_list("purpose", "position"))
    assert positions == [("chat", 0), ("chat", 1), ("chat", 2), ("summary", 0), ("summary", 1)]


def test_a_site_without_a_summary_chain_summarises_with_its_chat_chain():
    site = createsite(*ORIGIN, *PRIMARY)
    assert [e.kind for e in endpoints_for(site, "summary")] == ["anthropic"]


def test_the_sites_listing_shows_both_chains_without_keys():
    createsite(*ORIGIN, *PRIMARY, "--fallback", "ollama", "--summary", "gemini,api_key=AIza-secret-9999")
    out = io.StringIO()
    call_command("sites", stdout=out)
    assert "chat=anthropic:claude-haiku-4-5 → ollama:llama3.2" in out.getvalue()
    assert "summary=gemini:gemini-2.5-flash" in out.getvalue()
    assert "9999" not in out.getvalue() and "1111" not in out.getvalue()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--provider", "cohere", "--api-key", "k"], "invalid choice: 'cohere'"),
        (["--provider", "anthropic"], "chat provider 1 \\(anthropic\\): api_key: Anthropic needs an API key"),
        (["--provider", "gemini"], "Google Gemini needs an API key"),
        (
            [*PRIMARY, "--base-url", "api.anthropic.com"],
            "chat provider 1 \\(anthropic\\): base_url: 'api.anthropic.com' is not a valid base URL",
        ),
        (["--fallback", "ollama"], "--fallback needs --provider"),
        ([*PRIMARY, "--fallback", "cohere"], "unknown provider kind 'cohere' \\(choose one of: .*anthropic"),
        ([*PRIMARY, "--fallback", "openai"], "chat provider 2 \\(openai\\): api_key: OpenAI needs an API key"),
        ([*PRIMARY, "--fallback", "ollama,base_url=localhost:11434"], "chat provider 2 \\(ollama\\): base_url"),
        ([*PRIMARY, "--fallback", "ollama,modl=x"], "'modl=x' in 'ollama' is not NAME=VALUE"),
        ([*PRIMARY, "--fallback", "ollama,model"], "'model' in 'ollama' is not NAME=VALUE"),
        ([*PRIMARY, "--fallback", ",model=x"], "does not start with a provider kind"),
        ([*PRIMARY, "--fallback", "ollama,model=a,model=b"], "model is given twice"),
        ([*PRIMARY, "--fallback", "openai,api_key=a,api_key_env=B"], "api_key_env is given twice"),
        ([*PRIMARY, "--fallback", "ollama,idle_timeout=soon"], "idle_timeout for 'ollama' must be a number"),
        ([*PRIMARY, "--fallback", "ollama,idle_timeout=0"], "idle_timeout: Ensure this value is greater"),
        ([*PRIMARY, "--summary", "gemini"], "summary provider 1 \\(gemini\\): api_key: Google Gemini needs an API key"),
        ([*PRIMARY, "--summary", "gemini,api_key_env=PARLEY_UNSET_VAR"], "'PARLEY_UNSET_VAR' \\(the gemini key\\)"),
    ],
)
def test_bad_provider_arguments_fail_clearly_and_create_nothing(args, message):
    with pytest.raises(CommandError, match=message) as failure:
        createsite(*ORIGIN, *args)
    assert "sk-ant-primary-1111" not in str(failure.value)
    assert not Site.objects.exists() and not ProviderConfig.objects.exists()

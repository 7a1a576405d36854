"""Fake Anthropic, Gemini and Ollama servers on 127.0.0.1 next to the shared fake OpenAI, and sites using them.

Keys: each kind's site is made with a key of its own, so a test can prove that key went only to that fake.
"""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from backend.sites.provisioning import ProviderSpec, SiteSpec, create_site
from tests.conftest import ACME_ORIGIN, FAKE_KEY
from tests.fakes.formats import anthropic_default, gemini_default, lmstudio_default, ollama_default
from tests.fakes.server import FakeServer, fixtures

ANTHROPIC_KEY = "sk-ant-test-0123456789ANTH"
GEMINI_KEY = "AIza-test-0123456789GEMI"


@pytest.fixture(autouse=True)
def fast_retries(settings) -> None:
    """Retries on, with waits of a few milliseconds so the suite stays fast."""
    settings.PROVIDER_MAX_ATTEMPTS = 3
    settings.PROVIDER_RETRY_BASE_SECONDS = 0.005
    settings.PROVIDER_RETRY_MAX_WAIT_SECONDS = 0.02
    settings.PROVIDER_RETRY_BUDGET_SECONDS = 5.0


anthropic_server, fake_anthropic = fixtures(anthropic_default, "anthropic_server")
gemini_server, fake_gemini = fixtures(gemini_default, "gemini_server")
ollama_server, fake_ollama = fixtures(ollama_default, "ollama_server")
lmstudio_server, fake_lmstudio = fixtures(lmstudio_default, "lmstudio_server")


def make_site(*providers: ProviderSpec, name: str = "Acme"):
    """Create a site whose chat chain is the given providers, in order."""
    return create_site(SiteSpec(name=name, origins=[ACME_ORIGIN], providers=list(providers)))


async def amake_site(*providers: ProviderSpec, name: str = "Acme"):
    return await database_sync_to_async(make_site)(*providers, name=name)


@pytest.fixture
def servers(fake_openai, fake_lmstudio, fake_anthropic, fake_gemini, fake_ollama, prices) -> dict[str, FakeServer]:
    """The fake that plays each kind (the keyed Chat Completions kinds share the fake OpenAI)."""
    return {
        "openai": fake_openai,
        "mistral": fake_openai,
        "deepseek": fake_openai,
        "lmstudio": fake_lmstudio,
        "ollama": fake_ollama,
        "anthropic": fake_anthropic,
        "gemini": fake_gemini,
    }


def spec_for(kind: str, server: FakeServer, **overrides) -> ProviderSpec:
    """A provider of this kind pointed at its fake, with the base URL shape the real vendor uses."""
    base = {
        "openai": "/v1",
        "mistral": "/v1",
        "deepseek": "",
        "lmstudio": "/v1",
        "ollama": "",
        "anthropic": "",
        "gemini": "/v1beta",
    }[kind]
    key = {"anthropic": ANTHROPIC_KEY, "gemini": GEMINI_KEY, "lmstudio": "", "ollama": ""}.get(kind, FAKE_KEY)
    return ProviderSpec(**({"kind": kind, "base_url": server.origin + base, "api_key": key} | overrides))

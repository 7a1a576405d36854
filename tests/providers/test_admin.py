"""The admin's provider editor: keys masked and write-only, bad providers refused with a clear message."""

from __future__ import annotations

import pytest

from backend.providers.models import Price, ProviderConfig
from backend.sites.provisioning import ProviderSpec
from tests.admin_forms import form_data
from tests.providers.conftest import make_site

pytestmark = pytest.mark.django_db

STORED_KEY = "sk-ant-stored-secret-Q7zK"


@pytest.fixture
def site(prices):
    return make_site(ProviderSpec(kind="anthropic", api_key=STORED_KEY, model="claude-haiku-4-5"))


def change_url(site) -> str:
    return f"/admin/sites/site/{site.pk}/change/"


def site_form(client, site, **provider) -> dict:
    """The POST the admin's site page sends, with one provider row (the stored one when it has an id)."""
    config = site.provider_configs.first()
    row = {
        "id": str(config.pk) if config else "",
        "site": str(site.pk),
        "purpose": "chat",
        "position": "0",
        "kind": "anthropic",
        "base_url": "",
        "model": "claude-haiku-4-5",
        "api_key": "",
        "enabled": "on",
        "connect_timeout": "",
        "first_byte_timeout": "",
        "idle_timeout": "",
    } | provider
    # Start from the page itself, so inlines other apps add to the site page are submitted untouched.
    page = form_data(client.get(change_url(site)).content.decode())
    data = {k: v for k, v in page.items() if not k.startswith("provider_configs-")} | {
        "name": site.name,
        "allowed_origins": '["https://acme.example"]',
        "system_prompt": site.system_prompt,
        "max_reply_tokens": str(site.max_reply_tokens),
        "max_message_length": str(site.max_message_length),
        "title": site.title,
        "greeting": site.greeting,
        "color": site.color,
        "provider_configs-TOTAL_FORMS": "1",
        "provider_configs-INITIAL_FORMS": "1" if config else "0",
        "provider_configs-MIN_NUM_FORMS": "0",
        "provider_configs-MAX_NUM_FORMS": "1000",
    }
    data |= {f"provider_configs-0-{name}": value for name, value in row.items() if value != "" or name == "id"}
    if not row["enabled"]:
        data.pop("provider_configs-0-enabled", None)
    return data


def test_the_site_page_shows_the_key_masked_and_never_in_full(admin_client, site):
    page = admin_client.get(change_url(site)).content.decode()
    assert "••••Q7zK" in page
    assert STORED_KEY not in page and "stored-secret" not in page
    for kind in ("anthropic", "gemini", "ollama", "openai", "mistral", "deepseek", "lmstudio"):
        assert f'value="{kind}"' in page


def test_saving_without_typing_a_key_keeps_the_stored_one(admin_client, site):
    response = admin_client.post(
        change_url(site), site_form(admin_client, site, model="claude-sonnet-4-6", idle_timeout="12.5")
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    config = ProviderConfig.objects.get()
    assert (config.api_key, config.model, config.idle_timeout) == (STORED_KEY, "claude-sonnet-4-6", 12.5)
    assert config.endpoint().idle_timeout == 12.5


def test_typing_a_new_key_replaces_the_stored_one(admin_client, site):
    response = admin_client.post(change_url(site), site_form(admin_client, site, api_key="sk-ant-new-key-R2d2"))
    assert response.status_code == 302
    assert ProviderConfig.objects.get().api_key == "sk-ant-new-key-R2d2"


def test_a_refused_form_does_not_echo_the_typed_key(admin_client, site):
    response = admin_client.post(
        change_url(site), site_form(admin_client, site, api_key="sk-typed-but-refused-5555", base_url="not a url")
    )
    page = response.content.decode()
    assert response.status_code == 200 and "is not a valid base URL" in page
    assert "sk-typed-but-refused-5555" not in page and STORED_KEY not in page
    assert ProviderConfig.objects.get().api_key == STORED_KEY


@pytest.mark.parametrize(
    ("provider", "message"),
    [
        ({"kind": "cohere"}, "Select a valid choice. cohere is not one of the available choices."),
        ({"base_url": "api.anthropic.com"}, "&#x27;api.anthropic.com&#x27; is not a valid base URL"),
        ({"base_url": "ftp://files.example"}, "is not a valid base URL"),
        ({"kind": "gemini", "clear_api_key": "on"}, "Google Gemini needs an API key"),
        ({"idle_timeout": "0"}, "Ensure this value is greater than or equal to 0.1."),
    ],
)
def test_the_admin_refuses_a_bad_provider_with_a_clear_message(admin_client, site, provider, message):
    response = admin_client.post(change_url(site), site_form(admin_client, site, **provider))
    assert response.status_code == 200
    assert message in response.content.decode()
    config = ProviderConfig.objects.get()
    assert (config.kind, config.base_url, config.api_key) == ("anthropic", "", STORED_KEY)


def test_a_new_provider_without_a_key_is_refused_where_the_kind_needs_one(admin_client, prices):
    site = make_site()
    response = admin_client.post(change_url(site), site_form(admin_client, site, kind="anthropic"))
    assert "Anthropic needs an API key" in response.content.decode()
    assert not ProviderConfig.objects.exists()
    response = admin_client.post(change_url(site), site_form(admin_client, site, kind="ollama", model="llama3.2"))
    assert response.status_code == 302
    assert ProviderConfig.objects.get().kind == "ollama"


def test_removing_the_key_of_a_keyless_kind_is_allowed(admin_client, prices):
    site = make_site(ProviderSpec(kind="ollama", api_key="proxy-token-0000"))
    response = admin_client.post(change_url(site), site_form(admin_client, site, kind="ollama", clear_api_key="on"))
    assert response.status_code == 302
    assert ProviderConfig.objects.get().api_key == ""


def test_prices_are_listed_and_editable_in_the_admin(admin_client, prices):
    page = admin_client.get("/admin/providers/price/").content.decode()
    assert "claude-sonnet-4-6" in page and "gemini-2.5-flash" in page
    price = Price.objects.get(kind="openai", model="gpt-4o-mini")
    response = admin_client.post(
        f"/admin/providers/price/{price.pk}/change/",
        {"kind": "openai", "model": "gpt-4o-mini", "input_per_million": "0.20", "output_per_million": "0.80"},
    )
    assert response.status_code == 302
    price.refresh_from_db()
    assert (str(price.input_per_million), str(price.output_per_million)) == ("0.2000", "0.8000")

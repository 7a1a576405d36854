"""A provider row turns into an Endpoint: the kind's defaults, the site's timeouts or the server's."""

from __future__ import annotations

import pytest

from backend.providers.models import ProviderConfig, endpoints_for
from backend.sites.provisioning import ProviderSpec
from tests.providers.conftest import make_site

pytestmark = pytest.mark.django_db


def test_blank_fields_take_the_kinds_defaults_and_the_servers_timeouts(settings):
    settings.PROVIDER_CONNECT_TIMEOUT, settings.PROVIDER_FIRST_BYTE_TIMEOUT, settings.PROVIDER_IDLE_TIMEOUT = 4, 25, 15
    site = make_site(ProviderSpec(kind="gemini", api_key="AIza-0000-1111"))
    [endpoint] = endpoints_for(site)
    assert (endpoint.protocol, endpoint.base_url, endpoint.model) == (
        "gemini",
        "https://generativelanguage.googleapis.com/v1beta",
        "gemini-2.5-flash",
    )
    assert (endpoint.connect_timeout, endpoint.first_byte_timeout, endpoint.idle_timeout) == (4, 25, 15)
    assert "AIza-0000-1111" not in repr(endpoint)


def test_a_providers_own_timeouts_win():
    site = make_site(ProviderSpec(kind="ollama", connect_timeout=1, first_byte_timeout=90, idle_timeout=45))
    [endpoint] = endpoints_for(site)
    assert (endpoint.base_url, endpoint.connect_timeout, endpoint.first_byte_timeout, endpoint.idle_timeout) == (
        "http://localhost:11434",
        1,
        90,
        45,
    )


def test_disabled_providers_are_left_out_of_the_chain_and_order_follows_position():
    site = make_site(
        ProviderSpec(kind="ollama", model="first"),
        ProviderSpec(kind="lmstudio", model="second"),
        ProviderSpec(kind="ollama", model="third"),
    )
    ProviderConfig.objects.filter(model="second").update(enabled=False)
    ProviderConfig.objects.filter(model="first").update(position=9)
    assert [e.model for e in endpoints_for(site)] == ["third", "first"]

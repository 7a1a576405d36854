"""Appearance settings an owner sets on a site reach the widget in the ready frame; bad ones are refused."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.urls import reverse

from backend.sites.models import Site
from tests.admin_forms import form_data
from tests.conftest import chat, connect_and_hello

STARTERS = ["How do I reset my password?", "Where is my order?"]


@pytest.mark.django_db(transaction=True)
async def test_the_ready_frame_carries_avatar_position_and_starter_questions(acme):
    acme.avatar_url = "https://acme.example/bot.png"
    acme.position = "left"
    acme.starter_questions = STARTERS
    await database_sync_to_async(acme.save)()
    async with chat(acme.key) as ws:
        ready = await connect_and_hello(ws)
    config = ready["config"]
    assert (config["avatar"], config["position"], config["starters"]) == (
        "https://acme.example/bot.png",
        "left",
        STARTERS,
    )


@pytest.mark.django_db(transaction=True)
async def test_a_site_without_appearance_settings_sends_the_defaults(acme):
    async with chat(acme.key) as ws:
        ready = await connect_and_hello(ws)
    assert (ready["config"]["avatar"], ready["config"]["position"], ready["config"]["starters"]) == ("", "right", [])


def post_appearance(client, site: Site, **fields: str):
    url = reverse("admin:sites_site_change", args=[site.pk])
    data = form_data(client.get(url).content.decode()) | fields
    return client.post(url, data)


@pytest.mark.django_db
def test_an_owner_sets_the_appearance_in_the_admin(admin_client, acme):
    response = post_appearance(
        admin_client, acme, avatar_url="https://acme.example/a.png", position="left", starter_questions='["Hi?"]'
    )
    assert response.status_code == 302
    acme.refresh_from_db()
    assert (acme.avatar_url, acme.position, acme.starter_questions) == ("https://acme.example/a.png", "left", ["Hi?"])


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("avatar_url", "http://acme.example/a.png", "https://"),
        ("avatar_url", "javascript:alert(1)", "Enter a valid URL"),
        ("starter_questions", '["1", "2", "3", "4", "5", "6"]', "at most five"),
        ("starter_questions", '[""]', "1 to 120 characters"),
        ("starter_questions", '["' + "x" * 121 + '"]', "1 to 120 characters"),
        ("starter_questions", '{"not": "a list"}', "at most five"),
        ("position", "top", "Select a valid choice"),
    ],
)
def test_bad_appearance_settings_are_refused_with_a_message_and_nothing_changes(
    admin_client, acme, field, value, message
):
    response = post_appearance(admin_client, acme, **{field: value})
    assert response.status_code == 200
    errors = " ".join(response.context["adminform"].form.errors[field])
    assert message in errors
    acme.refresh_from_db()
    assert (acme.avatar_url, acme.position, acme.starter_questions) == ("", "right", [])


def save_while_redis_is_away(admin_client, site: Site, settings, ledger: str):
    """Post a change of the site's position with REDIS_URL pointing where nothing listens; return the
    response and the site as it was before."""
    from tests.processes import free_port

    url = reverse("admin:sites_site_change", args=[site.pk])
    data = form_data(admin_client.get(url).content.decode()) | {"position": "left"}
    before = Site.objects.get(pk=site.pk)
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    settings.QUOTA_LEDGER = ledger
    return admin_client.post(url, data), before


@pytest.mark.django_db(transaction=True)
def test_a_site_saved_while_redis_is_away_is_refused_with_a_503_and_left_as_it_was(admin_client, acme, settings):
    """With the Redis ledger every process compares the configuration stamp kept in Redis
    (backend/chat/config.py): a save that cannot write it is refused whole, so no connection goes on under
    settings that changed."""
    response, before = save_while_redis_is_away(admin_client, acme, settings, "redis")
    assert response.status_code == 503 and response["Retry-After"] == "5"
    assert "nothing was saved" in response.content.decode()
    site = Site.objects.get(pk=acme.pk)
    assert (site.position, site.config_stamp) == ("right", before.config_stamp)


@pytest.mark.django_db(transaction=True)
def test_with_the_database_ledger_a_site_is_saved_while_redis_is_away(admin_client, acme, settings):
    """The database ledger compares no stamp in Redis, so saving a site does not need it."""
    response, before = save_while_redis_is_away(admin_client, acme, settings, "database")
    assert response.status_code == 302
    site = Site.objects.get(pk=acme.pk)
    assert site.position == "left" and site.config_stamp != before.config_stamp

"""`manage.py createsite` and `manage.py sites`: what a site owner types, and the errors they see."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from backend.providers.models import ProviderConfig
from backend.sites.models import Site

pytestmark = pytest.mark.django_db


def createsite(*args: str) -> dict:
    out = io.StringIO()
    call_command("createsite", *args, stdout=out)
    return json.loads(out.getvalue())


def test_it_prints_one_json_object_with_key_secret_and_snippet(settings):
    settings.PUBLIC_URL = "https://chat.example.net"
    output = createsite(
        "Acme",
        "--origin",
        "https://acme.example",
        "--origin",
        "https://www.acme.example:8443/",
        "--provider",
        "openai",
        "--api-key",
        "sk-live-abcdef123456",
        "--model",
        "gpt-4o-mini",
        "--greeting",
        "Hello from Acme",
        "--max-reply-tokens",
        "300",
    )
    assert set(output) == {"key", "webhook_secret", "snippet"}
    site = Site.objects.get(key=output["key"])
    assert (
        output["snippet"] == f'<script src="https://chat.example.net/widget.js" data-site="{site.key}" async></script>'
    )
    assert output["webhook_secret"].startswith("whsec_") and output["webhook_secret"] == site.webhook_secret
    assert site.allowed_origins == ["https://acme.example", "https://www.acme.example:8443"]
    assert (site.greeting, site.max_reply_tokens) == ("Hello from Acme", 300)
    config = site.provider_configs.get()
    assert (config.kind, config.model, config.api_key) == ("openai", "gpt-4o-mini", "sk-live-abcdef123456")


def test_the_provider_key_is_encrypted_at_rest():
    output = createsite(
        "Acme", "--origin", "https://acme.example", "--provider", "openai", "--api-key", "sk-live-SECRET99"
    )
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT api_key FROM providers_providerconfig")
        (stored,) = cursor.fetchone()
        cursor.execute("SELECT webhook_secret FROM sites_site WHERE key = %s", [output["key"]])
        (stored_secret,) = cursor.fetchone()
    assert "sk-live-SECRET99" not in stored and stored.startswith("gAAAA")
    assert output["webhook_secret"] not in stored_secret


def test_two_sites_get_different_random_keys_and_secrets():
    one = createsite("One", "--origin", "https://one.example")
    two = createsite("Two", "--origin", "https://two.example")
    assert one["key"] != two["key"] and one["webhook_secret"] != two["webhook_secret"]
    assert len(one["key"]) >= 20


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--origin", "acme.example"], "scheme must be http or https"),
        (["--origin", "https://acme.example/path"], "no path"),
        (["--origin", "ftp://acme.example"], "scheme must be http or https"),
        (["--origin", "https://"], "no host"),
        (["--origin", "https://acme.example", "--provider", "openai"], "needs an API key"),
        (["--origin", "https://acme.example", "--api-key", "sk-x"], "need --provider"),
        (
            ["--origin", "https://acme.example", "--provider", "openai", "--api-key", "k", "--base-url", "not a url"],
            "base URL",
        ),
        (["--origin", "https://acme.example", "--max-reply-tokens", "1"], "max_reply_tokens"),
    ],
)
def test_bad_arguments_fail_with_a_clear_message_and_create_nothing(args, message):
    with pytest.raises(CommandError, match=message):
        createsite("Acme", *args)
    assert not Site.objects.exists()
    assert not ProviderConfig.objects.exists()


def test_argument_errors_exit_non_zero_on_stderr_and_create_nothing(tmp_path):
    import subprocess
    import sys

    env_db = tmp_path / "db.sqlite3"
    env = {"DATABASE_URL": f"sqlite:///{env_db}", "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], env=env, check=True)
    for args in (
        ["Acme"],
        ["Acme", "--origin", "https://a.example", "--provider", "nope"],
        ["Acme", "--origin", "bad"],
    ):
        result = subprocess.run(
            [sys.executable, "manage.py", "createsite", *args], env=env, capture_output=True, text=True
        )
        assert result.returncode != 0, args
        assert result.stdout == ""
        assert result.stderr.strip(), args
    listing = subprocess.run([sys.executable, "manage.py", "sites"], env=env, capture_output=True, text=True)
    assert "No sites yet" in listing.stdout


def test_sites_lists_each_site_with_its_chain():
    output = createsite("Acme", "--origin", "https://acme.example", "--provider", "openai", "--api-key", "sk-abc123456")
    out = io.StringIO()
    call_command("sites", stdout=out)
    assert output["key"] in out.getvalue() and "openai:gpt-4o-mini" in out.getvalue()
    assert "sk-abc123456" not in out.getvalue()


def test_site_keys_never_start_with_a_dash_so_commands_take_them_as_arguments():
    from backend.sites.models import new_site_key

    keys = [new_site_key() for _ in range(2000)]
    assert not any(key.startswith("-") for key in keys)
    assert len(set(keys)) == len(keys) and all(len(key) == 24 for key in keys)

"""The site admin's agent settings: assigning agents, the handoff timeout, and a write-only identity secret."""

from __future__ import annotations

import json

import pytest

from backend.agents.models import Assignment
from backend.sites.models import Site
from tests.agents.conftest import login

pytestmark = pytest.mark.django_db

SECRET = "0123456789abcdef0123456789abcdef-site-secret"


def site_form(client, site: Site) -> dict:
    """Return the site change form's current values, as the browser would post them back."""
    response = client.get(f"/admin/sites/site/{site.pk}/change/")
    form = response.context["adminform"].form
    data = {}
    for name in form.fields:
        value = form[name].value()
        if isinstance(value, list):
            value = json.dumps(value) if name == "allowed_origins" else value
        data[name] = "" if value is None else value
    for formset in response.context["inline_admin_formsets"]:
        management = formset.formset.management_form
        for name in management.fields:
            data[f"{management.prefix}-{name}"] = management[name].value()
        for index, inline_form in enumerate(formset.formset.forms):
            for name in inline_form.fields:
                value = inline_form[name].value()
                data[f"{formset.formset.prefix}-{index}-{name}"] = "" if value is None else value
    return {k: v for k, v in data.items() if v is not False}


def test_a_superuser_sets_an_identity_secret_that_is_never_shown_again(acme, root):
    client = login(root)
    data = site_form(client, acme) | {"identity_secret": SECRET, "handoff_timeout": "300"}
    response = client.post(f"/admin/sites/site/{acme.pk}/change/", data)
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response
    acme.refresh_from_db()
    assert (acme.identity_secret, acme.handoff_timeout) == (SECRET, 300)
    page = client.get(f"/admin/sites/site/{acme.pk}/change/").text
    assert SECRET not in page
    assert "••••cret" in page

    # Saving again with the box left blank keeps the secret; the checkbox removes it.
    client.post(f"/admin/sites/site/{acme.pk}/change/", site_form(client, acme))
    acme.refresh_from_db()
    assert acme.identity_secret == SECRET
    client.post(f"/admin/sites/site/{acme.pk}/change/", site_form(client, acme) | {"clear_identity_secret": "on"})
    acme.refresh_from_db()
    assert acme.identity_secret == ""


def test_the_identity_secret_is_encrypted_at_rest(acme):
    acme.identity_secret = SECRET
    acme.save()
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT identity_secret FROM sites_site WHERE id = %s", [acme.pk])
        raw = cursor.fetchone()[0]
    assert SECRET not in raw and raw.startswith("gAAAA")


@pytest.mark.parametrize(("field", "value"), [("identity_secret", "too-short"), ("handoff_timeout", "5")])
def test_bad_agent_settings_are_refused_and_nothing_changes(acme, root, field, value):
    client = login(root)
    response = client.post(f"/admin/sites/site/{acme.pk}/change/", site_form(client, acme) | {field: value})
    assert response.status_code == 200
    assert response.context["adminform"].form.errors[field]
    acme.refresh_from_db()
    assert (acme.identity_secret, acme.handoff_timeout) == ("", 120)


def test_a_superuser_assigns_an_agent_to_a_site(acme, root, ann, pat):
    Assignment.objects.filter(user=ann).delete()
    client = login(root)
    data = site_form(client, acme)
    prefix = "agent_assignments"
    data |= {f"{prefix}-TOTAL_FORMS": "1", f"{prefix}-0-user": str(ann.pk), f"{prefix}-0-site": str(acme.pk)}
    response = client.post(f"/admin/sites/site/{acme.pk}/change/", data)
    assert response.status_code == 302
    assert list(Assignment.objects.filter(site=acme).values_list("user__username", flat=True)) == ["ann"]
    # Only staff users can be picked.
    choices = client.get(f"/admin/sites/site/{acme.pk}/change/").context["inline_admin_formsets"]
    agents_formset = next(f for f in choices if f.formset.prefix == prefix)
    users = set(agents_formset.formset.empty_form.fields["user"].queryset.values_list("username", flat=True))
    assert "ann" in users and "pat" not in users

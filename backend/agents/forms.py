from __future__ import annotations

from django import forms

from backend.sites.forms import WriteOnlySecretsForm, secret_input
from backend.sites.models import Site


class SiteIdentityForm(WriteOnlySecretsForm):
    """Edit a site with a write-only identity secret: the stored secret is never sent back to the browser."""

    secret_fields = {"identity_secret": "secret"}
    identity_secret = secret_input(
        min_length=32,
        help_text="At least 32 characters, e.g. from `python -c 'import secrets; print(secrets.token_hex(32))'`. "
        "Leave blank to keep the stored secret. See docs/agents.md for computing the hash.",
    )
    clear_identity_secret = forms.BooleanField(required=False, label="Remove the identity secret")

    class Meta:
        model = Site
        fields = ["handoff_timeout", "identity_secret"]  # the admin adds the fields of its fieldsets

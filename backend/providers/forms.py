from __future__ import annotations

from django import forms

from backend.providers.models import ProviderConfig
from backend.sites.forms import WriteOnlySecretsForm, secret_input


class ProviderConfigForm(WriteOnlySecretsForm):
    """Edit a provider with a write-only key: the stored key is never sent back to the browser."""

    secret_fields = {"api_key": "key"}
    api_key = secret_input(help_text="Leave blank to keep the stored key.")
    clear_api_key = forms.BooleanField(required=False, label="Remove the stored key")

    class Meta:
        model = ProviderConfig
        fields = [
            "purpose",
            "position",
            "kind",
            "base_url",
            "model",
            "api_key",
            "clear_api_key",
            "enabled",
            "connect_timeout",
            "first_byte_timeout",
            "idle_timeout",
        ]

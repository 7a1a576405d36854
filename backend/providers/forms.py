from __future__ import annotations

from django import forms

from backend.providers.models import ProviderConfig
from backend.sites.crypto import mask_secret


class ProviderConfigForm(forms.ModelForm):
    """Edit a provider with a write-only key: the stored key is never sent back to the browser."""

    api_key = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Leave blank to keep the stored key.",
    )
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

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._stored_key = self.instance.api_key if self.instance.pk else ""
        if self._stored_key:
            masked = mask_secret(self._stored_key)
            self.fields["api_key"].help_text = f"Stored key: {masked}. Leave blank to keep it."
            self.fields["api_key"].widget.attrs["placeholder"] = f"stored: {masked}"

    def clean(self) -> dict:
        data = super().clean()
        # The model copies cleaned_data, so the stored key goes back in when none was typed.
        if data.get("clear_api_key"):
            data["api_key"] = ""
        elif not data.get("api_key"):
            data["api_key"] = self._stored_key
        return data

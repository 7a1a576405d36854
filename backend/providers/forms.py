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
        fields = ["purpose", "position", "kind", "base_url", "model", "api_key", "clear_api_key", "enabled"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._stored_key = self.instance.api_key if self.instance.pk else ""
        if self._stored_key:
            self.fields["api_key"].help_text = f"Stored key: {mask_secret(self._stored_key)}. Leave blank to keep it."

    def clean(self) -> dict:
        data = super().clean()
        if data.get("clear_api_key"):
            self.instance.api_key = ""
        elif not data.get("api_key"):
            self.instance.api_key = self._stored_key
        return data

    def _post_clean(self) -> None:
        # ModelForm copies cleaned_data onto the instance here; keep the stored key when none was typed.
        new_key = self.cleaned_data.get("api_key")
        super()._post_clean()
        if not new_key:
            self.instance.api_key = "" if self.cleaned_data.get("clear_api_key") else self._stored_key
            try:
                self.instance.clean()
            except Exception as error:  # noqa: BLE001 - reported as a form error
                self._update_errors(error)

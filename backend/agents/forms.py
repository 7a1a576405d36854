from __future__ import annotations

from django import forms

from backend.sites.crypto import mask_secret
from backend.sites.models import Site


class SiteIdentityForm(forms.ModelForm):
    """Edit a site with a write-only identity secret: the stored secret is never sent back to the browser."""

    identity_secret = forms.CharField(
        required=False,
        strip=True,
        min_length=32,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="At least 32 characters, e.g. from `python -c 'import secrets; print(secrets.token_hex(32))'`. "
        "Leave blank to keep the stored secret. See docs/agents.md for computing the hash.",
    )
    clear_identity_secret = forms.BooleanField(required=False, label="Remove the identity secret")

    class Meta:
        model = Site
        fields = ["handoff_timeout", "identity_secret"]  # the admin adds the fields of its fieldsets

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._stored_secret = self.instance.identity_secret if self.instance.pk else ""
        if self._stored_secret:
            self.fields[
                "identity_secret"
            ].help_text = f"Stored secret: {mask_secret(self._stored_secret)}. Leave blank to keep it."

    def _post_clean(self) -> None:
        new_secret = self.cleaned_data.get("identity_secret")
        super()._post_clean()
        if self.cleaned_data.get("clear_identity_secret"):
            self.instance.identity_secret = ""
        elif not new_secret:
            self.instance.identity_secret = self._stored_secret

"""Admin forms for secrets that are encrypted at rest and never sent back to the browser."""

from __future__ import annotations

from django import forms

from backend.sites.crypto import mask_secret


def secret_input(**kwargs) -> forms.CharField:
    """Return a password field that never renders the stored value; blank means "keep what is stored"."""
    widget = forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"})
    return forms.CharField(required=False, strip=True, widget=widget, **kwargs)


class WriteOnlySecretsForm(forms.ModelForm):
    """Edit secrets write-only: show them masked, keep them when left blank, remove them on request.

    `secret_fields` maps each secret field to the word shown beside its mask ("key", "secret"); each
    needs a `secret_input()` field of the same name and a `clear_<name>` BooleanField.
    """

    secret_fields: dict[str, str] = {}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._stored = {
            name: (getattr(self.instance, name) or "") if self.instance.pk else "" for name in self.secret_fields
        }
        for name, noun in self.secret_fields.items():
            if self._stored[name] and name in self.fields:
                masked = mask_secret(self._stored[name])
                field = self.fields[name]
                field.help_text = f"Stored {noun}: {masked}. Leave blank to keep it."
                field.widget.attrs["placeholder"] = f"stored: {masked}"

    def clean(self) -> dict:
        data = super().clean()
        # ModelForm copies cleaned_data onto the instance, so the stored secret goes back in when none was typed.
        for name in self.secret_fields:
            if data.get(f"clear_{name}"):
                data[name] = ""
            elif not data.get(name):
                data[name] = self._stored[name]
        return data

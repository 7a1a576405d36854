from django.contrib import admin

from backend.providers.forms import ProviderConfigForm
from backend.providers.models import ProviderConfig


class ProviderConfigInline(admin.TabularInline):
    model = ProviderConfig
    form = ProviderConfigForm
    extra = 0
    ordering = ["purpose", "position"]

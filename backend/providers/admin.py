from django.contrib import admin

from backend.providers.forms import ProviderConfigForm
from backend.providers.models import Price, ProviderConfig


class ProviderConfigInline(admin.StackedInline):
    model = ProviderConfig
    form = ProviderConfigForm
    extra = 0
    ordering = ["purpose", "position"]


@admin.register(Price)
class PriceAdmin(admin.ModelAdmin):
    list_display = ["kind", "model", "input_per_million", "output_per_million", "updated"]
    list_filter = ["kind"]
    list_editable = ["input_per_million", "output_per_million"]
    search_fields = ["model"]

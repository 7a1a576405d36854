from django.apps import AppConfig


class QuotasConfig(AppConfig):
    name = "backend.quotas"
    verbose_name = "Usage and quotas"

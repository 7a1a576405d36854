from django.apps import AppConfig


class ProvidersConfig(AppConfig):
    name = "backend.providers"
    label = "providers"

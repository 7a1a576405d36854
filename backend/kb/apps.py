from django.apps import AppConfig


class KbConfig(AppConfig):
    name = "backend.kb"
    label = "kb"
    verbose_name = "Knowledge base"

from django.apps import AppConfig


class FrontConfig(AppConfig):
    name = "backend.front"
    label = "front"

from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "backend.agents"
    label = "agents"
    verbose_name = "Support agents"

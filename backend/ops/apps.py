from __future__ import annotations

from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "backend.ops"
    label = "ops"
    verbose_name = "Operations"

    def ready(self) -> None:
        from backend.ops.shutdown import install_twisted_trigger

        install_twisted_trigger()

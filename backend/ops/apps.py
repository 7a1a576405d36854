from __future__ import annotations

import logging

from django.apps import AppConfig
from django.conf import settings


class OpsConfig(AppConfig):
    name = "backend.ops"
    label = "ops"
    verbose_name = "Operations"

    def ready(self) -> None:
        from backend.ops.shutdown import install_twisted_trigger

        install_twisted_trigger()
        if settings.LOG_FORMAT == "json":
            # Python warnings become log records too, so every line on stderr stays one JSON object.
            logging.captureWarnings(True)

"""The Celery app: `celery -A backend worker` runs the worker; settings come from CELERY_* in settings.py."""

from __future__ import annotations

import os
from pathlib import Path

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")

app = Celery("backend")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_configure.connect
def _make_queue_folders(sender: Celery, **kwargs) -> None:
    # The filesystem transport needs its folders to exist before the first message is written.
    for folder in (sender.conf.broker_transport_options or {}).values():
        if isinstance(folder, str) and os.sep in folder:
            Path(folder).mkdir(parents=True, exist_ok=True)

"""The Celery settings the tickets rely on: late acks, one task at a time, no server needed by default."""

from __future__ import annotations

import os
import subprocess
import sys

from backend.celery import app
from backend.tickets import tasks
from tests.processes import ROOT


def test_tasks_are_acknowledged_late_one_at_a_time_and_requeued_when_a_worker_dies():
    assert app.conf.task_acks_late is True
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.task_reject_on_worker_lost is True
    for task in (tasks.summarize_ticket, tasks.summarize_conversation, tasks.deliver_callback):
        assert task.acks_late is True


def settings_in_a_fresh_process(**env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CELERY_BROKER_URL")}
    code = "from backend.celery import app; print(app.conf.broker_url); print(app.conf.result_backend)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=clean | env, capture_output=True, text=True, check=True
    )
    return out.stdout.split()


def test_without_redis_the_broker_is_a_filesystem_queue_that_needs_no_server(tmp_path):
    broker, backend = settings_in_a_fresh_process(CELERY_FILESYSTEM_QUEUE_DIR=str(tmp_path / "q"))
    assert broker == "filesystem://" and backend == "None"
    assert (tmp_path / "q" / "queue").is_dir()


def test_with_redis_url_the_broker_and_result_backend_are_redis():
    broker, backend = settings_in_a_fresh_process(REDIS_URL="redis://127.0.0.1:6379/3")
    assert broker == backend == "redis://127.0.0.1:6379/3"

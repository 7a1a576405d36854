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


CONF = (
    "from backend.celery import app; print(app.conf.broker_url, app.conf.result_backend, app.conf.task_default_queue)"
)


def in_a_fresh_process(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CELERY_BROKER_URL", "CELERY_QUEUE")}
    return subprocess.run([sys.executable, "-c", CONF], cwd=ROOT, env=clean | env, capture_output=True, text=True)


def settings_in_a_fresh_process(**env: str) -> list[str]:
    out = in_a_fresh_process(**env)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_without_redis_the_broker_is_a_filesystem_queue_that_needs_no_server(tmp_path):
    broker, backend, _ = settings_in_a_fresh_process(CELERY_FILESYSTEM_QUEUE_DIR=str(tmp_path / "q"))
    assert broker == "filesystem://" and backend == "None"
    assert (tmp_path / "q" / "queue").is_dir()


def test_with_redis_url_the_broker_and_result_backend_are_redis():
    broker, backend, _ = settings_in_a_fresh_process(REDIS_URL="redis://127.0.0.1:6379/3")
    assert broker == backend == "redis://127.0.0.1:6379/3"


def test_a_rabbitmq_broker_and_a_queue_of_its_own_are_set_from_the_environment():
    broker, backend, queue = settings_in_a_fresh_process(
        CELERY_BROKER_URL="amqp://parley:secret@mq.internal:5672/parley", CELERY_QUEUE="shop-a.tickets"
    )
    assert (broker, backend, queue) == ("amqp://parley:secret@mq.internal:5672/parley", "None", "shop-a.tickets")
    assert settings_in_a_fresh_process()[2] == "celery"  # the default queue, as Celery names it


def test_a_queue_name_that_cannot_be_right_stops_the_process_with_a_clear_error():
    for wrong in ("", "two words", "x" * 201):
        out = in_a_fresh_process(CELERY_QUEUE=wrong)
        assert out.returncode != 0
        assert "ImproperlyConfigured: CELERY_QUEUE must be 1 to 200 letters, digits" in out.stderr, out.stderr[-500:]

"""A real Celery worker process beside daphne: the integrator's path from curl to a finished summary.

Without REDIS_URL the worker uses the filesystem queue that `make run` uses; the services suite runs the
same path on Redis (REDIS_URL) and on RabbitMQ (SERVICES_AMQP_URL).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from kombu import Connection

from tests.fakes.server import Reply
from tests.processes import ROOT, daphne, manage, server_env
from tests.tickets.conftest import GOOD_SUMMARY, TICKET, good_reply, signed_headers


@contextlib.contextmanager
def celery_worker(env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """Run `celery -A backend worker` (one process, so killing it kills the task) until the block ends."""
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "backend", "worker", "--pool", "solo", "--loglevel", "INFO"]
        + ["--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


def wait_for_status(port: int, url_path: str, secret: str, wanted: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = httpx.get(f"http://127.0.0.1:{port}{url_path}", headers={"Authorization": f"Bearer {secret}"}).json()
        if status["status"] == wanted or time.monotonic() > deadline:
            return status
        time.sleep(0.2)


def delete_queue(url: str, name: str) -> None:
    with Connection(url, connect_timeout=5) as broker:
        broker.default_channel.queue_delete(name)


def queue_depth(url: str, name: str) -> int:
    """The messages waiting in a RabbitMQ queue; fails (NOT_FOUND) when nobody declared it."""
    with Connection(url, connect_timeout=5) as broker:
        return broker.default_channel.queue_declare(name, passive=True).message_count


BROKERS = [
    "filesystem",
    pytest.param("redis", marks=pytest.mark.services),
    pytest.param("rabbitmq", marks=pytest.mark.services),
]


@pytest.fixture(params=BROKERS)
def stack_env(request, tmp_path, fake_llm):
    extra = {"CELERY_FILESYSTEM_QUEUE_DIR": str(tmp_path / "queue"), "TICKET_LEASE_SECONDS": "1"}
    if request.param == "redis":
        if not os.environ.get("REDIS_URL"):
            pytest.skip("needs Redis: set REDIS_URL (the services suite does) to run a worker on it")
        extra["REDIS_URL"] = os.environ["REDIS_URL"]
    elif request.param == "rabbitmq":
        amqp_url = os.environ.get("SERVICES_AMQP_URL")
        if not amqp_url:
            pytest.skip("needs RabbitMQ: set SERVICES_AMQP_URL (the services suite does) to run a worker on it")
        # A queue of the test's own: nothing another run left in RabbitMQ can reach this worker.
        queue = f"parley-test-{uuid.uuid4().hex[:12]}"
        extra |= {"CELERY_BROKER_URL": amqp_url, "CELERY_QUEUE": queue}
        request.addfinalizer(lambda: delete_queue(amqp_url, queue))
    env = server_env(f"sqlite:///{tmp_path / 'worker.sqlite3'}", **extra)
    manage(env, "migrate", "--noinput", "-v0")
    created = json.loads(
        manage(
            env,
            "createsite",
            "Desk",
            "--origin",
            "https://desk.example",
            "--provider",
            "openai",
            "--base-url",
            f"{fake_llm.origin}/v1",
            "--api-key",
            "sk-worker-test-0000",
        )
    )
    return env, created


def post_ticket(port: int, site: dict, body: dict) -> dict:
    raw = json.dumps(body).encode()
    response = httpx.post(
        f"http://127.0.0.1:{port}/api/sites/{site['key']}/tickets/",
        content=raw,
        headers={"Content-Type": "application/json", **signed_headers(site["webhook_secret"], raw)},
    )
    assert response.status_code == 202, response.text
    return response.json()


# On the filesystem queue this path is covered by the launcher test below.
@pytest.mark.parametrize("stack_env", BROKERS[1:], indirect=True)
def test_a_real_worker_summarizes_a_ticket_posted_to_daphne(stack_env, fake_llm):
    env, site = stack_env
    fake_llm.queue(good_reply())
    with celery_worker(env), daphne(env) as port:  # both boot at once
        accepted = post_ticket(port, site, TICKET)
        status = wait_for_status(port, urlsplit(accepted["url"]).path, site["webhook_secret"], "done")
    assert status == {"id": accepted["id"], "status": "done", "summary": GOOD_SUMMARY, "external_id": "ZD-1001"}
    assert fake_llm.requests[0].headers["authorization"] == "Bearer sk-worker-test-0000"
    if "CELERY_QUEUE" in env:  # on RabbitMQ, through the queue the environment named, now drained
        assert queue_depth(env["CELERY_BROKER_URL"], env["CELERY_QUEUE"]) == 0


def test_a_worker_killed_mid_summary_leaves_the_ticket_to_the_next_worker(stack_env, fake_llm):
    env, site = stack_env
    # The first call hangs until its worker dies; the next one answers.
    fake_llm.queue(Reply(first_byte_delay=120, pieces=[b"{}"], content_type="application/json"), good_reply())
    with daphne(env) as port:
        with celery_worker(env) as doomed:
            accepted = post_ticket(port, site, TICKET)
            assert fake_llm.wait_for(lambda: len(fake_llm.requests) == 1, timeout=60)
            doomed.kill()
            doomed.wait(10)
        time.sleep(1.5)  # let the dead worker's one-second lease run out
        with celery_worker(env):
            status = wait_for_status(port, urlsplit(accepted["url"]).path, site["webhook_secret"], "done")
    assert status["status"] == "done" and status["summary"] == GOOD_SUMMARY
    assert len(fake_llm.requests) == 2


def running_in_group(group: int, settle: float) -> list[str]:
    """Return the group's processes still running, giving exiting pool children a moment to finish."""
    deadline = time.monotonic() + settle
    while True:
        lines = subprocess.run(["ps", "-o", "stat=,args=", "-g", str(group)], capture_output=True, text=True).stdout
        # Exited processes may linger as zombies where PID 1 does not reap orphans (containers).
        running = [line for line in lines.splitlines() if not line.strip().startswith("Z")]
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(0.2)


def test_make_runs_launcher_serves_summarizes_and_stops_both_on_ctrl_c(tmp_path, fake_llm):
    import signal

    from tests.processes import free_port, wait_for_port

    port = free_port()
    env = server_env(
        f"sqlite:///{tmp_path / 'run.sqlite3'}", PORT=str(port), CELERY_FILESYSTEM_QUEUE_DIR=str(tmp_path / "queue")
    )
    manage(env, "migrate", "--noinput", "-v0")
    site = json.loads(
        manage(
            env,
            "createsite",
            "Run",
            "--origin",
            "https://run.example",
            "--provider",
            "openai",
            "--base-url",
            f"{fake_llm.origin}/v1",
            "--api-key",
            "sk-run-test-0000",
        )
    )
    fake_llm.queue(good_reply())
    log = tmp_path / "launcher.log"
    launcher = subprocess.Popen(
        [sys.executable, "scripts/devserver.py"],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, like a terminal's foreground job
    )
    try:
        wait_for_port(port, timeout=60)
        accepted = post_ticket(port, site, TICKET)
        status = wait_for_status(port, urlsplit(accepted["url"]).path, site["webhook_secret"], "done")
        assert status["summary"] == GOOD_SUMMARY
        os.killpg(launcher.pid, signal.SIGINT)  # what Ctrl-C sends
        # Ctrl-C stops both cleanly: no "make: *** Error" after the visitor asked it to stop.
        assert launcher.wait(45) == 0  # raises TimeoutExpired if Ctrl-C did not stop it
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/")
        assert running_in_group(launcher.pid, settle=20) == []
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
        print(log.read_text(errors="replace")[-4000:])  # shown by pytest when the test fails

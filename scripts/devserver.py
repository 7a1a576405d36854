"""Run daphne and a Celery worker side by side for `make run`; Ctrl-C, or either one exiting, stops both."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def commands(port: str) -> list[list[str]]:
    python = sys.executable
    return [
        [python, "-m", "daphne", "-b", "127.0.0.1", "-p", port, "--websocket-max-message-size", "65536"]
        + ["backend.asgi:application"],
        # --beat runs the minute-by-minute sweep that requeues tickets a crashed worker left behind; its
        # schedule file sits beside the queue (CELERY_BEAT_SCHEDULE_FILENAME).
        [python, "-m", "celery", "-A", "backend", "worker", "--beat", "--loglevel", "INFO", "--concurrency", "2"],
    ]


def stop(processes: list[subprocess.Popen], signalled_too: bool) -> None:
    """Stop the children; a worker finishes its current task first.

    After Ctrl-C the terminal has signalled the children too: they get time to stop on their own, since a
    second signal during Celery's warm shutdown would turn it into a cold one (and a non-zero exit).
    """
    deadline = time.monotonic() + 30
    if signalled_too:
        for process in processes:
            try:
                process.wait(max(0.1, min(10.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                break
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Stop(Exception):
    def __init__(self, signum: int) -> None:
        self.signum = signum


def _interrupt(signum: int, frame: object) -> None:
    raise Stop(signum)


def main() -> int:
    # The commands are fixed here; only PORT comes from the environment, as a separate argument.
    processes = [subprocess.Popen(command) for command in commands(os.environ.get("PORT", "8000"))]  # noqa: S603
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        while all(process.poll() is None for process in processes):
            time.sleep(0.5)
    except Stop as stopped:
        # Asked to stop (Ctrl-C reaches the whole process group; SIGTERM only this launcher): a clean exit.
        stop(processes, signalled_too=stopped.signum == signal.SIGINT)
        return 0
    # A child exited by itself: stop the other, and report the failure.
    stop(processes, signalled_too=False)
    return max(process.returncode or 0 for process in processes)


if __name__ == "__main__":
    sys.exit(main())

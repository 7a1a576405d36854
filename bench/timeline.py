"""Where one conversation's time to first token goes in the server: the steps from a message frame's arrival
to the request written to the provider and the first delta sent, as medians over many messages.

  python -m bench.timeline [messages]

Serves this checkout with daphne (pinned to the server's CPU, as `make bench` does) on the benchmarks'
fake provider and database, with timers put around the functions below when the server starts (`install`),
not in the application's code, and sends one conversation's messages as bench/ab.py does.
Prints each step's quartiles in milliseconds from the frame's arrival. The figures of "Timers in the
server" in docs/benchmarks.md come from here.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.ab import alternate
from bench.client import WARM_UP

# (step, what marks it), in the order they usually come.
STEPS = [
    ("frame received", "ChatConsumer.receive is called"),
    ("guess made", "services.guess_reservation returns"),
    ("claim's script sent", "claims._run_once starts, which sends it"),
    ("Redis answered", "claims._run_once returns"),
    ("reply prepared", "services.prepare_guessed or prepare_reply returns"),
    ("reply task running", "ChatConsumer.stream_reply starts"),
    ("request to httpx", "the transport's handle_async_request starts"),
    ("request written", "the body is written (ChatRequest.on_sent)"),
    # With Redis, the history is read beside the call (HistoryCheck); without, before it, in prepare_reply.
    ("read started", "services.read_history starts, in its worker thread"),
    ("read done", "services.read_history returns"),
    ("first delta", "the first delta frame is sent"),
]


class Timeline:
    """The steps of the message in progress (one conversation: one at a time), each at its first time."""

    def __init__(self, sink: Callable[[dict[str, float]], None]) -> None:
        self.sink = sink
        self.current: dict[str, int] = {}

    def begin(self) -> None:
        if "first delta" in self.current:
            self.sink({step: (at - self.current["frame received"]) / 1e6 for step, at in self.current.items()})
        self.current = {"frame received": time.perf_counter_ns()}

    def mark(self, step: str) -> None:
        if self.current and step not in self.current:
            self.current[step] = time.perf_counter_ns()


def timed(function: Callable, timeline: Timeline, start: str | None = None, end: str | None = None) -> Callable:
    """function, marking `start` when called and `end` when it returns (awaited, for a coroutine function)."""
    if asyncio.iscoroutinefunction(function):

        @functools.wraps(function)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            if start:
                timeline.mark(start)
            result = await function(*args, **kwargs)
            if end:
                timeline.mark(end)
            return result

    else:

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if start:
                timeline.mark(start)
            result = function(*args, **kwargs)
            if end:
                timeline.mark(end)
            return result

    return wrapper


def install(timeline: Timeline, patch: Callable[[object, str, Any], None] = setattr) -> None:
    """Put the timers around the application's functions (Django must be set up); patch sets an attribute
    (a test passes pytest's monkeypatch.setattr, which undoes it)."""
    import httpx

    from backend.chat import consumers, services
    from backend.ops import claims
    from backend.providers import http

    receive = consumers.ChatConsumer.receive

    @functools.wraps(receive)
    async def receiving(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is not None and '"message"' in text_data:
            timeline.begin()
        await receive(self, text_data, bytes_data)

    send_frame = consumers.ChatConsumer.send_frame

    @functools.wraps(send_frame)
    async def sending(self, frame: dict) -> None:
        await send_frame(self, frame)
        if frame["type"] == "delta":
            timeline.mark("first delta")

    tracer = http.sent_tracer

    def sent_tracer(on_sent: Callable) -> Callable:
        async def marked() -> None:
            timeline.mark("request written")
            await on_sent()

        return tracer(marked)

    chat = consumers.ChatConsumer
    patch(chat, "receive", receiving)
    patch(chat, "send_frame", sending)
    patch(chat, "stream_reply", timed(chat.stream_reply, timeline, "reply task running"))
    patch(services, "read_history", timed(services.read_history, timeline, "read started", "read done"))
    patch(services, "guess_reservation", timed(services.guess_reservation, timeline, end="guess made"))
    patch(services, "prepare_guessed", timed(services.prepare_guessed, timeline, end="reply prepared"))
    patch(services, "prepare_reply", timed(services.prepare_reply, timeline, end="reply prepared"))
    patch(claims, "_run_once", timed(claims._run_once, timeline, "claim's script sent", "Redis answered"))
    patch(http, "sent_tracer", sent_tracer)
    transport = httpx.AsyncHTTPTransport
    patch(transport, "handle_async_request", timed(transport.handle_async_request, timeline, "request to httpx"))


def serve(port: int, out: str) -> None:
    """The server's process: daphne serving the application, with the timers, writing a line a message to out."""
    import django

    django.setup()
    lines = open(out, "a", buffering=1)  # noqa: SIM115 - open while the server runs
    install(Timeline(lambda row: lines.write(json.dumps(row) + "\n")))
    from daphne.cli import CommandLineInterface

    CommandLineInterface().run(["-v", "0", "-b", "127.0.0.1", "-p", str(port), "backend.asgi:application"])


def summary(rows: list[dict[str, float]]) -> str:
    lines = ["| step | p25 | p50 | p75 | messages |", "|---|---:|---:|---:|---:|"]
    for step, _ in STEPS[1:]:
        values = [row[step] for row in rows if step in row]
        if len(values) >= 2:
            q1, q2, q3 = statistics.quantiles(values, n=4)
            lines.append(f"| {step} | {q1:.2f} | {q2:.2f} | {q3:.2f} | {len(values)} |")
    return "\n".join(lines)


def main() -> None:
    # Here, not at the top: bench.run needs the benchmarks' requirements (psutil).
    import subprocess

    from bench.run import LOAD_CPU, ROOT, SERVER_CPU, bench_env, bench_site, database, manage, pin, provider, reachable
    from tests.processes import free_port, wait_for_port

    messages = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    database_url, redis_url = os.environ.get("BENCH_DATABASE_URL", ""), os.environ.get("BENCH_REDIS_URL", "")
    if not reachable(database_url, redis_url):
        print("PostgreSQL or Redis not reachable: on SQLite and the in-memory channel layer, the steps differ")
        os.environ.pop("BENCH_DATABASE_URL", None)
        redis_url = ""
    with provider() as provider_port, database() as database_url, tempfile.TemporaryDirectory() as tmp:
        env = bench_env(database_url, redis_url) | {"CHAT_DELTA_COALESCE_MS": "5"}
        manage(env, "migrate", "--noinput", "-v0")
        key = bench_site(env, f"http://127.0.0.1:{provider_port}/v1")
        out, port = Path(tmp) / "timeline.jsonl", free_port()
        command = [sys.executable, "-m", "bench.timeline", "--serve", str(port), str(out)]
        server = subprocess.Popen(command, cwd=ROOT, env=env, preexec_fn=pin(SERVER_CPU))
        try:
            wait_for_port(port)
            if LOAD_CPU:
                os.sched_setaffinity(0, LOAD_CPU)
            # bench/ab.py's conversation, on one server: the same messages, pauses and warm-up rounds.
            asyncio.run(alternate([f"ws://127.0.0.1:{port}/ws/chat/{key}/"], messages))
        finally:
            server.terminate()
            server.wait(20)
        rows = [json.loads(line) for line in out.read_text().splitlines()][WARM_UP:]
    print(f"Milliseconds from the message frame's arrival, {len(rows)} messages:\n")
    print(summary(rows))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(int(sys.argv[2]), sys.argv[3])
    else:
        main()

"""Compare this checkout with another on one conversation's time to first token, messages alternating.

  python -m bench.ab OTHER_TREE [messages]     (OTHER_TREE: e.g. `git worktree add --detach /tmp/before HEAD~1`)

A change of a few tenths of a millisecond is below what separate runs of `bench.run --quick` can show on a
shared VM, whose speed moves from minute to minute. Here both checkouts are served at once (daphne, or
uvicorn with AB_SERVER=uvicorn, from this checkout's virtualenv, pinned to the same CPU), on one database
and one fake provider, and one conversation on each sends its messages in turn, in alternating order, so
any drift of the machine falls on both alike. Prints the quartiles of each side's time to first token.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
from pathlib import Path

from bench.client import WARM_UP, Stream, connect, prompt, relay_one, take_turns


async def alternate(urls: list[str], messages: int) -> list[Stream]:
    sockets = [await connect(url) for url in urls]
    streams = [Stream() for _ in urls]
    text = prompt(3, 10.0)  # three tokens, the first 10 ms after the request, as in the single-conversation run
    turns = [
        lambda index, ws=ws, stream=stream: relay_one(ws, stream, index, text)
        for ws, stream in zip(sockets, streams, strict=True)
    ]
    pause = 0.05  # as visitors' messages are: the servers idle between them
    await take_turns(turns, WARM_UP, pause)
    for stream in streams:
        stream.forget()
    await take_turns(turns, messages, pause)
    for ws in sockets:
        await ws.close()
    return streams


def quartiles(values: list[float]) -> str:
    q1, q2, q3 = statistics.quantiles(values, n=4)
    return f"p25 {q1:.2f}  p50 {q2:.2f}  p75 {q3:.2f} ms  (n={len(values)})"


def main() -> None:
    # Here, not at the top: bench.run needs the benchmarks' requirements (psutil), the driver above does not.
    from bench.run import LOAD_CPU, ROOT, Server, bench_env, bench_site, database, manage, provider, reachable

    if len(sys.argv) < 2:
        sys.exit(__doc__)
    trees = [ROOT, Path(sys.argv[1]).resolve()]
    messages = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    kind = os.environ.get("AB_SERVER", "daphne")
    database_url, redis_url = os.environ.get("BENCH_DATABASE_URL", ""), os.environ.get("BENCH_REDIS_URL", "")
    if not reachable(database_url, redis_url):
        os.environ.pop("BENCH_DATABASE_URL", None)
        redis_url = ""
    with provider() as provider_port, database() as database_url:
        env = bench_env(database_url, redis_url) | {"CHAT_DELTA_COALESCE_MS": "5"}
        manage(env, "migrate", "--noinput", "-v0")
        provider_url = f"http://127.0.0.1:{provider_port}/v1"
        keys = [bench_site(env, provider_url) for _ in trees]
        servers = [Server(kind, env, tree=tree) for tree in trees]
        try:
            if LOAD_CPU:
                os.sched_setaffinity(0, LOAD_CPU)
            urls = [f"ws://127.0.0.1:{s.port}/ws/chat/{key}/" for s, key in zip(servers, keys, strict=True)]
            streams = asyncio.run(alternate(urls, messages))
        finally:
            for server in servers:
                server.stop()
    for tree, stream in zip(trees, streams, strict=True):
        print(
            f"{tree}: time to first token {quartiles(stream.ttft)}"
            + (f", error {stream.error}" if stream.error else "")
        )
    print(json.dumps({str(tree): statistics.median(s.ttft) for tree, s in zip(trees, streams, strict=True)}))


if __name__ == "__main__":
    main()

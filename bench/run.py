"""Run every Parley benchmark and write docs/benchmarks.md (between its bench markers) and its chart.

`make bench` runs this. It starts, all on 127.0.0.1: the fake provider (bench/provider.py) in one
process, the server (daphne, then uvicorn for comparison) in another pinned to CPU 0, and the load
driver (bench/client.py) in a third pinned with the provider to CPU 1; then the same measures on the bare
relay (bench/bare.py), the reference for what Parley's own work adds. Every run is bounded in count and
time; the whole takes ten to fifteen minutes.

PostgreSQL and Redis are used when BENCH_DATABASE_URL / BENCH_REDIS_URL are set (`make bench` sets them
when the services answer); otherwise SQLite and the in-memory channel layer.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import psutil

from bench.client import WARM_UP
from tests.processes import ROOT, free_port, manage, server_env, wait_for_port

DOCS = ROOT / "docs" / "benchmarks.md"
CHART = ROOT / "docs" / "benchmarks.png"
RESULTS = ROOT / "bench" / "results" / "latest.json"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"

SWEEP = [1, 50, 100, 200, 300, 400, 500]
SWEEP_TOKENS, SWEEP_INTERVAL_MS = 60, 50.0  # a 3-second reply at 20 tokens a second, like a fast model
SINGLE_MESSAGES, SINGLE_TOKENS, SINGLE_INTERVAL_MS = 100, 20, 10.0
BURST_STREAMS, BURST_TOKENS = 50, 1000  # upstream as fast as the fake provider can write
IDLE_CONNECTIONS = 1000
CPU_STREAMS, CPU_MESSAGES = 20, 5  # server CPU costs: 100 replies over 20 open conversations
COALESCE_MS = "5"  # CHAT_DELTA_COALESCE_MS for the main runs (the value docs/deploy.md suggests trying)
CPUS = os.cpu_count() or 1
SERVER_CPU, LOAD_CPU = ({0}, {1}) if CPUS >= 2 else (None, None)


def pin(cpus: set[int] | None):
    return (lambda: os.sched_setaffinity(0, cpus)) if cpus else None


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def machine() -> dict:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    return {
        "nproc": CPUS,
        "cpu": model,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "os": platform.platform(),
    }


@contextmanager
def provider():
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port.json"
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.provider", str(port_file)], cwd=ROOT, preexec_fn=pin(LOAD_CPU)
        )
        try:
            deadline = time.monotonic() + 20
            while not port_file.exists() or not port_file.read_text():
                assert time.monotonic() < deadline, "the fake provider did not start"
                time.sleep(0.05)
            yield json.loads(port_file.read_text())["port"]
        finally:
            process.terminate()
            process.wait(10)


PARLEY, BARE = "backend.asgi:application", "bench.bare:application"
SERVERS = {
    "daphne": lambda port, app: (
        [sys.executable, "-m", "daphne", "-v", "0", "-b", "127.0.0.1", "-p", str(port)]
        + ["--websocket-max-message-size", "65536", app]
    ),
    "uvicorn": lambda port, app: (
        [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port)]
        + ["--no-access-log", "--log-level", "warning", "--ws-max-size", "65536", app]
    ),
}


class Server:
    """kind's server for app, pinned to the server's CPU; tree: the checkout it serves (bench/ab.py)."""

    def __init__(self, kind: str, env: dict[str, str], app: str = PARLEY, tree: Path = ROOT) -> None:
        self.kind = kind
        self.port = free_port()
        self.process = subprocess.Popen(
            SERVERS[kind](self.port, app), cwd=tree, env=env, preexec_fn=pin(SERVER_CPU), stdout=subprocess.DEVNULL
        )
        wait_for_port(self.port)
        self.ps = psutil.Process(self.process.pid)

    def rss_mib(self) -> float:
        return self.ps.memory_info().rss / 2**20

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def cpu_costs(server: Server, ws_url: str) -> dict:
    """Server CPU (user + system) per reply and per relayed chunk, from the same replies with 1 and 61 tokens.

    Paced like the sweep (one token per 50 ms), so each upstream chunk arrives on its own. These figures
    bound the concurrent streams of one core whatever the latency: CPU per second = streams x (tokens a
    second x per chunk + per reply / reply seconds).
    """

    def cpu_ms(tokens: int) -> float:
        before = server.ps.cpu_times()
        run = drive("relay", ws_url, streams=CPU_STREAMS, messages=CPU_MESSAGES, tokens=tokens,
                    interval_ms=SWEEP_INTERVAL_MS, ramp=1.0)  # fmt: skip
        after = server.ps.cpu_times()
        assert not run["errors"], run["errors"][:3]
        return (after.user + after.system - before.user - before.system) * 1000

    replies = CPU_STREAMS * CPU_MESSAGES
    short, long = cpu_ms(1), cpu_ms(SWEEP_TOKENS + 1)
    per_reply, per_chunk = short / replies, (long - short) / (replies * SWEEP_TOKENS)
    reply_s = SWEEP_TOKENS * SWEEP_INTERVAL_MS / 1000
    per_stream = (1000 / SWEEP_INTERVAL_MS) * per_chunk + per_reply / reply_s  # CPU ms a second per stream
    return {"per_reply_ms": round(per_reply, 2), "per_chunk_ms": round(per_chunk, 3),
            "streams_per_core": int(1000 / per_stream)}  # fmt: skip


class Sampler:
    """Sample the server's RSS and CPU, and how busy the load side's CPU is, every 100 ms while a run lasts.

    The load CPU (the fake provider and the driver) tells whether a run measured the server: where it is
    busy all the time, the load side may be what falls behind.
    """

    def __init__(self, server: Server) -> None:
        self.server = server
        self.rss: list[float] = []
        self.cpu: list[float] = []
        self.load: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.server.ps.cpu_percent()
        psutil.cpu_percent(percpu=True)
        while not self._stop.wait(0.1):
            self.rss.append(self.server.rss_mib())
            self.cpu.append(self.server.ps.cpu_percent())
            if LOAD_CPU:
                per_cpu = psutil.cpu_percent(percpu=True)
                self.load.append(sum(per_cpu[cpu] for cpu in LOAD_CPU) / len(LOAD_CPU))

    def mean(self, samples: list[float]) -> float | None:
        return round(sum(samples) / len(samples), 1) if samples else None

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def drive(mode: str, url: str, **options: float) -> dict:
    command = [sys.executable, "-m", "bench.client", mode, "--url", url]
    for name, value in options.items():
        command += [f"--{name.replace('_', '-')}", str(value)]
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=150, preexec_fn=pin(LOAD_CPU), check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"bench.client {mode} failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def stats(run: dict) -> dict:
    return {
        "ttft_p50": percentile(run["ttft_ms"], 50),
        "ttft_p99": percentile(run["ttft_ms"], 99),
        "late_p50": percentile(run["lateness_ms"], 50),
        "late_p99": percentile(run["lateness_ms"], 99),
        "chunks": run["chunks"],
        "chunks_per_s": run["chunks"] / run["span_s"] if run["span_s"] else None,
        "errors": len(run["errors"]),
    }


def added(relay: dict, direct: dict) -> dict:
    def minus(key: str) -> float | None:
        if relay[key] is None or direct[key] is None:
            return None
        return round(relay[key] - direct[key], 2)

    return {key: minus(key) for key in ("ttft_p50", "ttft_p99", "late_p50", "late_p99")}


def bench_server(
    kind: str,
    env: dict[str, str],
    site_key: str,
    provider_url: str,
    sweep: list[int] = SWEEP,
    burst: bool = True,
    idle: bool = True,
    app: str = PARLEY,
) -> dict:
    """Measure one server: a single conversation, then the concurrent sweep, the burst and idle connections."""
    results: dict = {"sweep": []}
    label = kind if app == PARLEY else bare_label(kind)
    server = Server(kind, env, app)
    ws_url = f"ws://127.0.0.1:{server.port}/ws/chat/{site_key}/"
    try:
        drive("relay", ws_url, streams=5, tokens=5, interval_ms=1)  # warm-up: imports, connections
        baseline = server.rss_mib()
        print(f"[{label}] single conversation", flush=True)
        single = {"messages": SINGLE_MESSAGES, "tokens": SINGLE_TOKENS, "interval_ms": SINGLE_INTERVAL_MS}
        both = drive("single", ws_url, direct_url=provider_url, **single)
        results["single"] = {"direct": stats(both["direct"]), "relay": stats(both["relay"])}
        results["single"]["added"] = added(results["single"]["relay"], results["single"]["direct"])
        if sweep:
            print(f"[{label}] server CPU per reply and per chunk", flush=True)
            results["cpu"] = cpu_costs(server, ws_url)
        for streams in sweep:
            print(f"[{label}] {streams} concurrent streams", flush=True)
            options = {"streams": streams, "tokens": SWEEP_TOKENS, "interval_ms": SWEEP_INTERVAL_MS, "ramp": 1.0}
            direct = stats(drive("direct", provider_url, **options))
            with Sampler(server) as sampler:
                relay = stats(drive("relay", ws_url, **options))
            results["sweep"].append(
                {
                    "streams": streams,
                    "direct": direct,
                    "relay": relay,
                    "added": added(relay, direct),
                    "rss_peak_mib": round(max(sampler.rss, default=server.rss_mib()), 1),
                    "cpu_peak_percent": max(sampler.cpu, default=0.0),
                    "cpu_mean_percent": sampler.mean(sampler.cpu),
                    "load_cpu_mean_percent": sampler.mean(sampler.load),
                }
            )
        if not burst:
            return results
        print(f"[{label}] burst: upstream as fast as it can write", flush=True)
        burst = {"streams": BURST_STREAMS, "tokens": BURST_TOKENS, "interval_ms": 0}
        with Sampler(server) as sampler:
            relay = stats(drive("relay", ws_url, **burst))
        results["burst"] = {
            "direct": stats(drive("direct", provider_url, **burst)),
            "relay": relay,
            "cpu_peak_percent": max(sampler.cpu, default=0.0),
        }
        if not idle:
            return results
        print(f"[{label}] {IDLE_CONNECTIONS} idle connections", flush=True)
        before = server.rss_mib()
        idle = subprocess.Popen(
            [sys.executable, "-m", "bench.client", "idle", "--url", ws_url, "--streams", str(IDLE_CONNECTIONS)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=pin(LOAD_CPU),
        )
        try:
            assert json.loads(idle.stdout.readline())["open"] == IDLE_CONNECTIONS
            time.sleep(1)
            during = server.rss_mib()
        finally:
            idle.communicate("done\n", timeout=60)
        results["idle"] = {
            "connections": IDLE_CONNECTIONS,
            "rss_before_mib": round(before, 1),
            "rss_during_mib": round(during, 1),
            "kib_per_connection": round((during - before) * 1024 / IDLE_CONNECTIONS, 1),
        }
        results["baseline_rss_mib"] = round(baseline, 1)
    finally:
        server.stop()
    return results


def queries_per_reply(database_url: str, redis_url: str) -> dict:
    """Count them in the configuration the servers ran in: with Redis, quota counters live there."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.queries", database_url],
        cwd=ROOT,
        env=server_env(database_url, LOG_LEVEL="WARNING", **({"REDIS_URL": redis_url} if redis_url else {})),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


@contextmanager
def database():
    """A fresh database: PostgreSQL when BENCH_DATABASE_URL is set (dropped afterwards), else SQLite."""
    url = os.environ.get("BENCH_DATABASE_URL", "")
    if not url:
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/bench.sqlite3"
        return
    import psycopg

    from tests.services.cluster import with_database

    name = url.rsplit("/", 1)[1]
    admin = with_database(url, "postgres")
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def reachable(database_url: str, redis_url: str) -> bool:
    """Whether the PostgreSQL server and Redis of the BENCH_* URLs answer."""
    import psycopg
    import redis

    from tests.services.cluster import with_database

    try:
        psycopg.connect(with_database(database_url, "postgres"), connect_timeout=3).close()
        redis.Redis.from_url(redis_url, socket_connect_timeout=3).ping()
    except Exception:  # noqa: BLE001 - any failure means "use SQLite and the in-memory layer"
        return False
    return True


def main() -> None:
    """`python -m bench.run` writes the docs; `--quick [server] [streams ...]` only prints a server's single and
    concurrent figures (daphne at 1 and 50 streams by default; `bare-daphne` or `bare-uvicorn` for the bare relay)."""
    quick = sys.argv[1:2] == ["--quick"]
    quick_server = sys.argv[2] if len(sys.argv) > 2 else "daphne"
    quick_app = BARE if quick_server.startswith("bare-") else PARLEY
    quick_server = quick_server.removeprefix("bare-")
    quick_sweep = [int(n) for n in sys.argv[3:]] or [1, 50]
    started = time.monotonic()
    if not reachable(os.environ.get("BENCH_DATABASE_URL", ""), os.environ.get("BENCH_REDIS_URL", "")):
        print("PostgreSQL or Redis not reachable: benchmarking on SQLite and the in-memory channel layer")
        os.environ.pop("BENCH_DATABASE_URL", None)
        os.environ.pop("BENCH_REDIS_URL", None)
    report: dict = {"machine": machine(), "command": "make bench", "servers": {}}
    redis_url = os.environ.get("BENCH_REDIS_URL", "")
    with provider() as provider_port, database() as database_url:
        provider_url = f"http://127.0.0.1:{provider_port}/v1"
        env = bench_env(database_url, redis_url)
        report["setup"] = {
            "database": database_url.split(":", 1)[0],
            "channel_layer": "redis" if redis_url else "in-memory",
        }
        manage(env, "migrate", "--noinput", "-v0")
        site = {"key": bench_site(env, provider_url)}
        if quick:
            result = bench_server(quick_server, env | {"CHAT_DELTA_COALESCE_MS": COALESCE_MS,
                                  "BARE_PROVIDER_URL": provider_url}, site["key"], provider_url,
                                  sweep=quick_sweep, burst=False, idle=False, app=quick_app)  # fmt: skip
            print(json.dumps({"single": result["single"]["added"], "cpu": result["cpu"]} | {
                f"sweep_{row['streams']}": row["added"] | {"cpu": row["cpu_peak_percent"], "cpu_mean": row["cpu_mean_percent"],
                                               "load_cpu_mean": row["load_cpu_mean_percent"]} for row in result["sweep"]
            }))  # fmt: skip
            return
        for kind in SERVERS:
            report["servers"][kind] = bench_server(
                kind, env | {"CHAT_DELTA_COALESCE_MS": COALESCE_MS}, site["key"], provider_url
            )
        # The same server without coalescing, to show what it changes.
        report["uncoalesced"] = bench_server(
            "daphne", env | {"CHAT_DELTA_COALESCE_MS": "0"}, site["key"], provider_url, sweep=[], idle=False
        )
        # The same measures on the bare relay (bench/bare.py): what the server, the WebSocket and httpx cost alone.
        report["bare"] = {
            kind: bench_server(
                kind,
                env | {"BARE_PROVIDER_URL": provider_url},
                site["key"],
                provider_url,
                burst=False,
                idle=False,
                app=BARE,
            )  # fmt: skip
            for kind in SERVERS
        }
    with database() as database_url:
        report["queries"] = queries_per_reply(database_url, redis_url)
    report["duration_s"] = round(time.monotonic() - started)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1))
    chart(report)
    write_docs(report)
    print(f"wrote {DOCS.relative_to(ROOT)}, {CHART.relative_to(ROOT)} and {RESULTS.relative_to(ROOT)}")


def bench_env(database_url: str, redis_url: str) -> dict[str, str]:
    """The servers' environment: production-like (JSON logs, persistent database connections, no debug)."""
    extra = {"REDIS_URL": redis_url} if redis_url else {}
    return server_env(
        database_url, DEBUG="false", SECRET_KEY="bench-" + "x" * 60, FIELD_ENCRYPTION_KEY=fernet_key(),
        LOG_FORMAT="json", LOG_LEVEL="WARNING", DATABASE_CONN_MAX_AGE="60", **extra,
    )  # fmt: skip


def bench_site(env: dict[str, str], provider_url: str) -> str:
    """Make a site answered by the fake provider at provider_url; return its key."""
    site = json.loads(
        manage(
            env,
            "createsite",
            "Bench",
            "--origin",
            "https://bench.example",
            "--provider",
            "openai",
            "--base-url",
            provider_url,
            "--api-key",
            "sk-bench-0000",
            "--model",
            "bench",
        )  # fmt: skip
    )
    # Every simulated visitor comes from 127.0.0.1: lift the per-address and per-visitor limits; set caps
    # no run reaches and price the bench model, so each reply is reserved, priced and settled in full.
    manage(
        env, "shell", "-c",
        "from backend.quotas.models import SiteQuota; from backend.sites.models import Site; "
        "from backend.providers.models import Price; "
        f"site = Site.objects.get(key={site['key']!r}); "
        "SiteQuota.objects.update_or_create(site=site, defaults=dict(ip_connections=100000,"
        " ip_messages_per_minute=1000000, visitor_messages_per_minute=1000000,"
        " daily_token_cap=10**12, monthly_token_cap=10**12, daily_cost_cap=10**5, monthly_cost_cap=10**5)); "
        "Price.objects.update_or_create(kind='openai', model='bench',"
        " defaults=dict(input_per_million='0.15', output_per_million='0.60')); "
        # The fake provider stops at max_tokens, as real ones do: let the burst's replies run in full.
        f"Site.objects.filter(pk=site.pk).update(max_reply_tokens={BURST_TOKENS})",
    )  # fmt: skip
    return site["key"]


def fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def bare_label(kind: str) -> str:
    return f"bare relay on {kind}"


def every_run(report: dict) -> list[tuple[str, dict]]:
    """Each measured server with its label: Parley on daphne and uvicorn, then the bare relay on both."""
    return list(report["servers"].items()) + [(bare_label(kind), data) for kind, data in report["bare"].items()]


def over_floor(row: dict, sweep: list[dict]) -> float | None:
    """A run's p99 delay through the relay, minus the p99 delay of one stream straight from the provider.

    Not minus the floor at the same count: beyond about a hundred streams the load side (the fake provider
    and the driver share one CPU) falls behind on its own, and subtracting its lag would credit the relay
    with it (the same-count *added* figures go negative there). Every delay is measured from the provider's
    write stamp, so this figure can only overstate what the relay adds.
    """
    floor = next(r["direct"]["late_p99"] for r in sweep if r["streams"] == 1)
    late = row["relay"]["late_p99"]
    return None if late is None or floor is None else round(late - floor, 2)


def sustained(sweep: list[dict]) -> int:
    """The most concurrent streams up to which every run kept its p99 delay within 100 ms of the floor."""
    best = 0
    for row in sorted(sweep, key=lambda row: row["streams"]):
        late = over_floor(row, sweep)
        if late is None or late > 100 or row["relay"]["errors"]:
            break
        best = row["streams"]
    return best


def chart(report: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for kind, data in every_run(report):
        xs = [row["streams"] for row in data["sweep"]]
        style = {"marker": "o", "linestyle": ":" if kind.startswith("bare") else "-", "label": kind}
        left.plot(xs, [over_floor(row, data["sweep"]) for row in data["sweep"]], **style)
        right.plot(xs, [row["relay"]["ttft_p50"] for row in data["sweep"]], **style)
    left.axhline(100, color="grey", linewidth=0.8, linestyle=":")
    right.axhline(SWEEP_INTERVAL_MS, color="grey", linewidth=0.8, linestyle=":")
    left.set(title="p99 delay of each chunk, over one stream's floor", xlabel="concurrent streams", ylabel="ms")
    right.set(
        title=f"Time to first token, p50 (the provider waits {SWEEP_INTERVAL_MS:g} ms)",
        xlabel="concurrent streams",
        ylabel="ms",
    )
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
        axis.set_yscale("symlog", linthresh=10)
        axis.set_ylim(bottom=0)
    fig.suptitle(f"One process pinned to one core ({report['machine']['cpu']}, {report['machine']['nproc']} CPUs)")
    fig.tight_layout()
    fig.savefig(CHART, dpi=110)


def query_kinds(report: dict) -> str:
    replies = report["queries"]["replies"]
    return ", ".join(f"{kind} {count / replies:g}" for kind, count in sorted(report["queries"]["by_kind"].items()))


def fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def write_docs(report: dict) -> None:
    m = report["machine"]
    lines = [
        START,
        "## How these figures were made",
        "",
        "```sh",
        "make bench",
        "```",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB memory, Python {m['python']}, {m['os']}.",
        f"Database: {report['setup']['database']}; channel layer: {report['setup']['channel_layer']}. "
        f"The run took {report['duration_s']} s. Raw figures: `bench/results/latest.json`.",
        "",
        "The fake provider (tests/fakes/server.py, in its own process) streams Chat Completions chunks whose text is",
        "the CLOCK_MONOTONIC time at which it writes them, and keeps each connection open for the next request, as",
        "real providers do. The load driver (bench/client.py, another process) notes",
        "when each token reaches it, either through Parley's WebSocket or straight from the provider with httpx (the",
        "floor). *Added* figures are Parley's percentile minus the floor's percentile in the same run. The server",
        "is pinned to CPU 0; the provider and the driver share CPU 1. One conversation (the *one conversation*",
        f"rows) sends {SINGLE_MESSAGES} messages of {SINGLE_TOKENS} tokens, taking turns with as many requests",
        f"straight to the provider, the side going first changing each round, after {WARM_UP} rounds not counted; so the",
        "machine's drift falls on both alike. In the sweep, conversations start spread over one second and",
        f"each streams {SWEEP_TOKENS} tokens at one per {SWEEP_INTERVAL_MS:g} ms. The server CPU rows come from",
        f"{CPU_STREAMS * CPU_MESSAGES} replies ({CPU_STREAMS} conversations of {CPU_MESSAGES} messages) made twice, with 1 and",
        f"with {SWEEP_TOKENS + 1} tokens at the same pace: the difference, divided by the extra chunks, is the CPU per chunk.",
        "",
        "![Delay and time to first token added by the relay](benchmarks.png)",
        "",
        "## Results against the targets",
        "",
        "| measure | target | daphne | uvicorn |",
        "|---|---|---|---|",
    ]
    servers = report["servers"]

    def row_at(data: dict, streams: int) -> dict:
        return next(row for row in data["sweep"] if row["streams"] == streams)

    def both(getter) -> str:  # noqa: ANN001
        return " | ".join(getter(servers[kind]) for kind in ("daphne", "uvicorn"))

    def p50_p99(added: dict, measure: str) -> str:
        return f"{fmt(added[measure + '_p50'])} / {fmt(added[measure + '_p99'])} ms"

    # The measures of both tables: Parley's two servers here, and beside the bare relay's below.
    relay_rows = [
        ("added time to first token, one conversation, p50 / p99", "≤ 2 ms p50",
         lambda d: p50_p99(d["single"]["added"], "ttft")),
        ("added time to first token, 50 concurrent, p50 / p99", "≤ 20 ms p50",
         lambda d: p50_p99(row_at(d, 50)["added"], "ttft")),
        ("added delay between chunks, one conversation, p50 / p99", "",
         lambda d: p50_p99(d["single"]["added"], "late")),
        (f"concurrent streams (up to {SWEEP[-1]} tried) before the p99 delay passes one stream's floor by 100 ms",
         "≥ 500", lambda d: str(sustained(d["sweep"]))),
        ("server CPU per reply / per relayed chunk (paced)", "",
         lambda d: f"{fmt(d['cpu']['per_reply_ms'], 2)} / {fmt(d['cpu']['per_chunk_ms'], 3)} ms"),
        (f"streams one core carries at that CPU ({1000 / SWEEP_INTERVAL_MS:g} tokens a second, "
         f"{SWEEP_TOKENS * SWEEP_INTERVAL_MS / 1000:g} s replies)", "≥ 500", lambda d: str(d["cpu"]["streams_per_core"])),
    ]  # fmt: skip
    lines += [f"| {label} | {target} | {both(getter)} |" for label, target, getter in relay_rows]
    lines += [
        "| relayed upstream chunks a second, one process | ≥ 10,000 | "
        + both(
            lambda d: (
                f"{fmt(d['burst']['relay']['chunks_per_s'], 0)} (floor {fmt(d['burst']['direct']['chunks_per_s'], 0)})"
            )
        )
        + " |",
        "| RSS with 200 streaming | ≤ 150 MiB | " + both(lambda d: f"{fmt(row_at(d, 200)['rss_peak_mib'])} MiB") + " |",
        "| memory per idle connection | ≤ 50 KB | "
        + both(lambda d: f"{fmt(d['idle']['kib_per_connection'])} KiB ({d['idle']['connections']} connections)")
        + " |",
        "| memory per streaming conversation | | "
        + both(lambda d: f"{fmt((row_at(d, 200)['rss_peak_mib'] - d['baseline_rss_mib']) * 1024 / 200)} KiB")
        + " |",
        f"| database queries per reply | ≤ 5 | {fmt(report['queries']['per_reply'])} ({query_kinds(report)}) | same code |",
        "",
        "## Coalescing",
        "",
        f"The main runs use `CHAT_DELTA_COALESCE_MS={COALESCE_MS}`. The same daphne with it at 0 (one frame per upstream chunk):",
        "",
        "| daphne | coalescing on | coalescing off |",
        "|---|---|---|",
        f"| relayed chunks a second (burst of {BURST_STREAMS} streams) | {fmt(servers['daphne']['burst']['relay']['chunks_per_s'], 0)} "
        f"| {fmt(report['uncoalesced']['burst']['relay']['chunks_per_s'], 0)} |",
        f"| added delay between chunks, one conversation, p50 / p99 (ms) | {fmt(servers['daphne']['single']['added']['late_p50'])} / "
        f"{fmt(servers['daphne']['single']['added']['late_p99'])} | {fmt(report['uncoalesced']['single']['added']['late_p50'])} / "
        f"{fmt(report['uncoalesced']['single']['added']['late_p99'])} |",
        "",
        "## The bare relay",
        "",
        "bench/bare.py does only what every relay on this stack must: it reads the chat socket's `message`, streams",
        "the reply with Parley's httpx client and httpx-sse, and writes each piece as a `delta` frame; no database,",
        "quota, claim, history, agents or logging. Measured the same way on the same servers, it shows what the",
        "server, the WebSocket and httpx cost on this machine, and so what Parley's own work adds.",
        "",
        "| measure | target | daphne: Parley | daphne: bare | uvicorn: Parley | uvicorn: bare |",
        "|---|---|---|---|---|---|",
    ]
    bare = report["bare"]

    def beside(getter) -> str:  # noqa: ANN001
        return " | ".join(getter(data[kind]) for kind in ("daphne", "uvicorn") for data in (servers, bare))

    lines += [f"| {label} | {target} | {beside(getter)} |" for label, target, getter in relay_rows]
    lines += [
        "",
        "## Concurrency sweep",
        "",
        "Milliseconds. *Added* = through the relay minus straight from the provider at the same count, in the same",
        "run; where the floor's own delay grows (the load side falling behind), it goes negative and means little.",
        "*Over floor* = the p99 delay through the relay minus one stream's floor p99: what the sustained count uses.",
        "*CPU %* = the server's, mean and peak of 100 ms samples through the relay; *load CPU %* = the mean of the",
        "other CPU's, where the fake provider and the driver run: near 100, the load side was a limit too.",
        "",
        "| server | streams | added TTFT p50 | added TTFT p99 | added delay p50 | added delay p99 | floor delay p99 | delay p99 over floor | peak RSS MiB | CPU % mean / peak | load CPU % | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, data in every_run(report):
        for row in data["sweep"]:
            a = row["added"]
            lines.append(
                f"| {kind} | {row['streams']} | {fmt(a['ttft_p50'])} | {fmt(a['ttft_p99'])} | {fmt(a['late_p50'])} | "
                f"{fmt(a['late_p99'])} | {fmt(row['direct']['late_p99'])} | {fmt(over_floor(row, data['sweep']))} | "
                f"{fmt(row['rss_peak_mib'])} | "
                f"{fmt(row.get('cpu_mean_percent'), 0)} / {fmt(row['cpu_peak_percent'], 0)} | "
                f"{fmt(row.get('load_cpu_mean_percent'), 0)} | {row['relay']['errors']} |"
            )
    lines += ["", END]
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n\n"
    block = "\n".join(lines)
    if START in text and END in text:
        text = text[: text.index(START)] + block + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    DOCS.write_text(text)


if __name__ == "__main__":
    main()

"""The deploy files (Procfile, compose, systemd, nginx) say what docs/deploy.md says, and the Procfile runs."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import subprocess

import httpx
import pytest
import yaml

from tests.ops.production import production_env
from tests.processes import ROOT, free_port, manage, wait_for_port

DEPLOY = ROOT / "deploy"


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def test_the_procfile_web_command_serves_the_app_with_production_settings(tmp_path):
    env = production_env(f"sqlite:///{tmp_path / 'db.sqlite3'}", PORT=str(free_port()))
    manage(env, "migrate", "--noinput", "-v0")
    command = procfile()["web"].replace("$PORT", env["PORT"]).replace("0.0.0.0", "127.0.0.1")
    args = shlex.split(command)
    args[0] = str(ROOT / ".venv" / "bin" / args[0]) if (ROOT / ".venv" / "bin" / args[0]).exists() else args[0]
    process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(int(env["PORT"]))
        response = httpx.get(f"http://127.0.0.1:{env['PORT']}/healthz", timeout=10)
        assert response.status_code == 200 and response.json()["status"] == "ok"
    finally:
        process.terminate()
        process.wait(10)


def test_the_compose_file_runs_two_processes_on_postgres_and_redis_behind_nginx():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"db", "redis", "migrate", "web1", "web2", "nginx"} <= set(services)
    for name in ("web1", "web2"):
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://") and env["REDIS_URL"].startswith("redis://")
        assert env["DEBUG"] == "false" and env["LOG_FORMAT"] == "json"
        assert services[name]["stop_signal"] == "SIGTERM"
        assert "/healthz" in " ".join(services[name]["healthcheck"]["test"])
    assert "./nginx.conf:/etc/nginx/conf.d/default.conf:ro" in services["nginx"]["volumes"]


def test_nginx_upgrades_websockets_and_keeps_them_open_through_a_slow_first_token():
    conf = (DEPLOY / "nginx.conf").read_text()
    websocket = conf[conf.index("location /ws/") : conf.index("location / ")]
    assert "proxy_set_header Upgrade $http_upgrade;" in websocket
    assert "proxy_set_header Connection $connection_upgrade;" in websocket
    assert "proxy_http_version 1.1;" in websocket
    assert int(re.search(r"proxy_read_timeout (\d+)s;", websocket)[1]) >= 300
    assert "proxy_buffering off;" in websocket
    assert "X-Forwarded-Proto $scheme" in websocket and "X-Request-ID $request_id" in websocket


@pytest.mark.skipif(
    not shutil.which("nginx") and not os.environ.get("PARLEY_REQUIRE_NGINX"), reason="nginx is not installed"
)
def test_nginx_accepts_the_configuration(tmp_path):
    conf = (
        (DEPLOY / "nginx.conf")
        .read_text()
        .replace("web1:8000", "127.0.0.1:8001")
        .replace("web2:8000", "127.0.0.1:8002")
    )
    main = tmp_path / "nginx.conf"
    (tmp_path / "parley.conf").write_text(conf)
    main.write_text(
        f"pid {tmp_path}/nginx.pid; error_log stderr; events {{}} http {{ include {tmp_path}/parley.conf; }}\n"
    )
    result = subprocess.run(["nginx", "-t", "-c", str(main), "-p", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_systemd_unit_runs_daphne_and_stops_it_with_sigterm_and_time_to_save_replies():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(DEPLOY / "systemd" / "parley@.service")
    service = unit["Service"]
    assert "daphne" in service["ExecStart"] and "backend.asgi:application" in service["ExecStart"]
    assert "-p %i" in service["ExecStart"] and "--proxy-headers" in service["ExecStart"]
    assert service["KillSignal"] == "SIGTERM" and int(service["TimeoutStopSec"]) >= 20
    assert service["EnvironmentFile"] == "/etc/parley/env"

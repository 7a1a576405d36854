"""GET /healthz: the database, the channel layer and the broker, each really probed."""

from __future__ import annotations

import os
import shutil

import pytest
from django.test import AsyncClient

from tests.ops.servers import RedisServer
from tests.processes import free_port

needs_redis_server = pytest.mark.skipif(not shutil.which("redis-server"), reason="redis-server is not installed")


def redis_layer(url: str) -> dict:
    return {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [url]}}}


@pytest.fixture
def private_redis(tmp_path):
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


@pytest.mark.django_db
async def test_healthz_answers_200_when_every_configured_service_answers():
    response = await AsyncClient().get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["channel_layer"]["status"] == "ok"
    # The broker is the filesystem queue `make run` uses, or Redis in the services suite: both answer here.
    assert body["checks"]["broker"]["status"] == "ok"
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.django_db
async def test_healthz_answers_503_naming_the_channel_layer_when_redis_does_not_answer(settings):
    settings.CHANNEL_LAYERS = redis_layer(f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    response = await AsyncClient().get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["channel_layer"]["status"] == "down"
    assert body["checks"]["database"]["status"] == "ok"
    assert "hunter2" not in response.content.decode()  # no credentials from URLs in the answer


@needs_redis_server
@pytest.mark.django_db
async def test_healthz_reports_a_redis_channel_layer_and_broker_that_answer(settings, private_redis):
    settings.CHANNEL_LAYERS = redis_layer(private_redis.url)
    settings.CELERY_BROKER_URL = private_redis.url
    response = await AsyncClient().get("/healthz")
    assert response.status_code == 200, response.json()
    assert response.json()["checks"]["broker"]["status"] == "ok"


@pytest.mark.parametrize(
    "broker", ["redis://parley:hunter2@127.0.0.1:{port}/0", "amqp://parley:hunter2@127.0.0.1:{port}//"]
)
@pytest.mark.django_db
async def test_healthz_answers_503_when_the_configured_broker_is_down(settings, broker):
    settings.CELERY_BROKER_URL = broker.format(port=free_port())  # Redis or RabbitMQ
    response = await AsyncClient().get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["broker"]["status"] == "down"
    assert response.json()["checks"]["database"]["status"] == "ok"
    assert "hunter2" not in response.content.decode()


@pytest.mark.services
@pytest.mark.django_db
async def test_healthz_reports_a_rabbitmq_broker_that_answers(settings):
    if not os.environ.get("SERVICES_AMQP_URL"):
        pytest.skip("needs RabbitMQ: set SERVICES_AMQP_URL (the services suite does)")
    settings.CELERY_BROKER_URL = os.environ["SERVICES_AMQP_URL"]
    response = await AsyncClient().get("/healthz")
    assert response.json()["checks"]["broker"]["status"] == "ok", response.json()


@pytest.mark.django_db
def test_every_response_carries_a_request_id_and_keeps_a_safe_one_from_the_proxy(client):
    fresh = client.get("/healthz")
    assert len(fresh["X-Request-ID"]) == 32
    assert client.get("/healthz")["X-Request-ID"] != fresh["X-Request-ID"]
    assert client.get("/healthz", headers={"X-Request-ID": "lb-7f3a.42"})["X-Request-ID"] == "lb-7f3a.42"
    forged = client.get("/healthz", headers={"X-Request-ID": "a\r\nSet-Cookie: x=1"})
    assert forged["X-Request-ID"] != "a\r\nSet-Cookie: x=1" and len(forged["X-Request-ID"]) == 32


@pytest.mark.django_db
def test_pages_carry_the_security_headers(client):
    response = client.get("/")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"

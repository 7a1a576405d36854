"""The provider client's network layer (backend/providers/network.py) against real sockets on 127.0.0.1.

httpx and httpcore do the HTTP; these tests check what the asyncio streams under them must get right:
keep-alive reuse, not reusing a connection the upstream closed, TLS, and failures as httpx errors.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from backend.providers.chain import ChainRun
from backend.providers.client import get_client, transport
from backend.providers.network import AsyncioStream
from tests.fakes.formats import openai_reply
from tests.fakes.server import Reply
from tests.providers.test_chain import REQUEST, collect, endpoint

pytestmark = pytest.mark.asyncio


class Upstream:
    """An HTTP/1.1 server that answers each request with a numbered body and keeps the connection open,
    unless told to close it after answering."""

    def __init__(self, close_after_reply: bool = False) -> None:
        self.close_after_reply = close_after_reply
        self.connections = 0
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                await reader.readexactly(length)
                self.requests += 1
                body = b"reply %d" % self.requests
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
                if self.close_after_reply:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def serving(upstream: Upstream, tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0, ssl=tls)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


def client(**options: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport(**options), trust_env=False, timeout=5)


async def test_the_shared_client_runs_on_asyncio_streams_and_reuses_a_kept_alive_connection():
    upstream = Upstream()
    async with serving(upstream) as port:
        shared = get_client()
        try:
            first = await shared.post(f"http://127.0.0.1:{port}/v1", json={"n": 1})
            second = await shared.post(f"http://127.0.0.1:{port}/v1", json={"n": 2})
            connection = shared._transport._pool.connections[0]._connection
            assert isinstance(connection._network_stream, AsyncioStream)
        finally:
            await shared.aclose()
    assert (first.text, second.text) == ("reply 1", "reply 2")
    assert upstream.connections == 1


async def test_a_connection_the_upstream_closed_while_idle_is_not_reused():
    upstream = Upstream(close_after_reply=True)
    async with serving(upstream) as port, client() as http:
        first = await http.get(f"http://127.0.0.1:{port}/")
        await asyncio.sleep(0.05)  # the upstream's close arrives while the connection sits in the pool
        second = await http.get(f"http://127.0.0.1:{port}/")
    assert (first.text, second.text) == ("reply 1", "reply 2")
    assert upstream.connections == 2


async def test_tls_upstreams_are_verified_and_answer(tmp_path: Path):
    certificate, key = self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(certificate, key)
    upstream = Upstream()
    async with serving(upstream, tls=server_tls) as port:
        async with client(verify=ssl.create_default_context(cafile=str(certificate))) as http:
            response = await http.get(f"https://127.0.0.1:{port}/")
            assert response.text == "reply 1"
            assert response.extensions["network_stream"].get_extra_info("ssl_object") is not None
        async with client() as http:  # httpx's default CA bundle does not know this certificate
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await http.get(f"https://127.0.0.1:{port}/")


async def test_a_refused_connection_is_an_httpx_connect_error():
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    async with client() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{port}/")


async def test_an_upstream_that_stops_answering_is_an_httpx_read_timeout():
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1000)
        await asyncio.sleep(5)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with client() as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.get(f"http://127.0.0.1:{port}/", timeout=httpx.Timeout(5, read=0.1))
    finally:
        server.close()


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certificate_path, key_path = folder / "cert.pem", folder / "key.pem"
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return certificate_path, key_path


async def test_cookies_an_upstream_sets_are_never_sent_on_later_requests(fake_openai):
    """The shared client serves every site: a provider's Set-Cookie must not follow one site's calls to another's."""
    fake_openai.queue(
        *[Reply(pieces=[b"{}"], content_type="application/json", headers={"Set-Cookie": "__cf_bm=site-a; Path=/"})] * 2
    )
    shared = get_client()
    try:
        for _ in range(2):
            await shared.post(f"{fake_openai.origin}/v1/chat/completions", json={})
    finally:
        await shared.aclose()
    assert len(fake_openai.requests) == 2
    assert "cookie" not in fake_openai.requests[1].headers
    assert not shared.cookies


async def test_streamed_replies_share_the_clients_connections_headers_and_cookie_rule(fake_openai):
    """Replies stream straight through the shared client's transport (backend/providers/http.py): they must
    still reuse its kept-alive connections, send its default headers once each beside the adapter's own,
    and neither keep nor send a cookie a provider sets."""
    streamed = Reply(pieces=openai_reply(["Hi"]).pieces, headers={"Set-Cookie": "__cf_bm=site-a; Path=/"})
    fake_openai.queue(streamed, streamed, Reply(pieces=[b"{}"], content_type="application/json"))
    shared = get_client()
    fake_openai.keep_alive = True  # as real providers: connections serve further requests
    try:
        for _ in range(2):
            assert await collect(ChainRun([endpoint("openai", fake_openai)], REQUEST)) == "Hi"
        await shared.post(f"{fake_openai.origin}/v1/embeddings", json={})  # the client, as the knowledge base calls
    finally:
        fake_openai.keep_alive = False
        await shared.aclose()
    assert fake_openai.connections == 1
    first, second, _ = fake_openai.requests
    assert first.headers["user-agent"] == shared.headers["user-agent"]
    assert first.headers["authorization"] == "Bearer sk-chain-test-0000"
    assert first.headers["content-type"] == "application/json"
    assert first.json()["messages"][-1] == {"role": "user", "content": "Hello there"}
    assert "cookie" not in second.headers
    assert not shared.cookies

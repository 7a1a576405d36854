"""httpcore's network layer on plain asyncio streams, for the provider client.

httpcore's default on asyncio goes through anyio, which for every read of a streamed reply opens a
cancel scope (even with no read timeout, which Parley never sets: the adapters time each phase
themselves), maps exceptions through a context manager, and pauses and resumes the socket's reader
(two epoll_ctl calls), and a token usually arrives in a read of its own. An asyncio StreamReader keeps
reading enabled and reads from its buffer: server CPU per relayed chunk went from about 0.67 to 0.48 ms
on the benchmark machine (docs/benchmarks.md).

This is httpcore's documented extension point (`network_backend`); httpx, httpcore and h11 still do all
of HTTP. The backend is installed on the shared client's connection pool by `client.py`.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Iterable
from typing import Any

import httpcore
from httpcore._utils import is_socket_readable

SocketOption = tuple[int, int, int | bytes] | tuple[int, int, None, int]


class AsyncioStream(httpcore.AsyncNetworkStream):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            if timeout is None:
                return await self._reader.read(max_bytes)
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError:
            raise httpcore.ReadTimeout("timed out reading from the upstream") from None
        except OSError as error:
            raise httpcore.ReadError(str(error) or type(error).__name__) from error

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            self._writer.write(buffer)
            async with asyncio.timeout(timeout):
                await self._writer.drain()
        except TimeoutError:
            raise httpcore.WriteTimeout("timed out writing to the upstream") from None
        except OSError as error:
            raise httpcore.WriteError(str(error) or type(error).__name__) from error

    async def aclose(self) -> None:
        # As anyio does: a graceful close, one turn of the loop to send it, then abort whatever is left
        # (a TLS close_notify the peer never answers must not hold the connection open).
        transport = self._writer.transport
        if not transport.is_closing():
            transport.close()
            await asyncio.sleep(0)
        transport.abort()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except TimeoutError:
            self._writer.transport.abort()
            raise httpcore.ConnectTimeout("timed out in the TLS handshake") from None
        except (OSError, ssl.SSLError) as error:
            self._writer.transport.abort()
            raise httpcore.ConnectError(str(error) or type(error).__name__) from error
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._writer.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        if info == "socket":
            return self._writer.get_extra_info("socket")
        if info == "is_readable":
            # httpcore asks before reusing a pooled connection: one the upstream closed (or sent data on)
            # meanwhile must not be reused. The reader may already have read the EOF off the socket.
            if self._reader.at_eof() or self._writer.transport.is_closing():
                return True
            return is_socket_readable(self._writer.get_extra_info("socket"))
        return None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        opening = asyncio.open_connection(
            host,
            port,
            local_addr=(local_address, 0) if local_address else None,
            happy_eyeballs_delay=0.25,  # as anyio: try the next address if one is slow (RFC 8305)
        )
        return await _open(opening, f"{host}:{port}", timeout, socket_options)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[SocketOption] | None = None
    ) -> httpcore.AsyncNetworkStream:
        return await _open(asyncio.open_unix_connection(path), path, timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def _open(
    opening: Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]],
    target: str,
    timeout: float | None,
    options: Iterable[SocketOption] | None,
) -> AsyncioStream:
    """Await a connection within the timeout, failing with httpcore's errors, and set the socket options."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await opening
    except TimeoutError:
        raise httpcore.ConnectTimeout(f"timed out connecting to {target}") from None
    except OSError as error:
        raise httpcore.ConnectError(str(error) or type(error).__name__) from error
    _set_options(writer, options)
    return AsyncioStream(reader, writer)


def _set_options(writer: asyncio.StreamWriter, options: Iterable[SocketOption] | None) -> None:
    sock: socket.socket = writer.get_extra_info("socket")
    for option in options or ():  # asyncio itself sets TCP_NODELAY on TCP sockets
        sock.setsockopt(*option)

"""The listening socket of a service, with a deadline on a connection's first request headers.

aiohttp closes a connection that stays idle, or sends partial headers, between requests (its keep-alive
timeout), but sets no limit before the first request: a client that opens connections and trickles header
bytes (slowloris) would hold each one for ever. ``HeaderDeadlineSite`` closes a connection whose first
request headers are not complete within ``header_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

_END_OF_HEADERS = b"\r\n\r\n"


class _HeaderDeadline(asyncio.Protocol):
    """Stands in front of aiohttp's protocol until the first request's headers have arrived."""

    def __init__(self, inner: Any, timeout: float) -> None:
        self._inner = inner
        self._timeout = timeout
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.BaseTransport | None = None
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._timer = asyncio.get_running_loop().call_later(self._timeout, self._expire)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._timer is not None:
            seen = self._tail + data
            if _END_OF_HEADERS in seen:
                self._timer.cancel()
                self._timer = None
            else:
                self._tail = seen[-3:]  # the end of the headers may straddle two reads
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        answer: bool | None = self._inner.eof_received()
        return answer

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def _expire(self) -> None:
        self._timer = None
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()


class HeaderDeadlineSite(web.TCPSite):
    def __init__(
        self,
        runner: web.BaseRunner,
        host: str | None = None,
        port: int | None = None,
        *,
        header_timeout: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(runner, host, port, **kwargs)
        self._header_timeout = header_timeout

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        timeout = self._header_timeout
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _HeaderDeadline(server(), timeout),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port

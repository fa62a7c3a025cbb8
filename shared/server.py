"""The listening socket of a service, with a deadline on a connection's first request headers.

aiohttp closes a connection that stays idle, or sends partial headers, between requests (its keep-alive
timeout), but sets no limit before the first request: a client that opens connections and trickles header
bytes (slowloris) would hold each one for ever. ``HeaderDeadlineSite`` closes a connection whose first
request headers are not complete within ``header_timeout`` seconds, and lets a request being handled as the
server stops receive the rest of its body (``_HearsOutBodies``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

_END_OF_HEADERS = b"\r\n\r\n"


class _HearsOutBodies(RequestHandler):
    """aiohttp's protocol, except that a request already being handled when the server begins to stop still
    receives the rest of its body.

    ``runner.cleanup()`` (shared/process.py, once readiness has failed) closes the listener, marks every
    connection closing (``Server.pre_shutdown``, then ``shutdown``) and waits up to its shutdown timeout for
    the requests in flight. From that moment aiohttp's ``data_received`` drops whatever arrives, the rest of a
    body whose headers came in before included: its handler waits for bytes that never come until the timeout
    cancels it and the connection is cut (the long fault run, seed 37: a post sent as intake's listener closed,
    answered by nothing for 8.6 s, then ``ServerDisconnectedError``; tests/unit/test_listener_closing.py). So
    the body of the latest request keeps flowing until it is complete; its answer says ``Connection: close``
    (shared/edge.py), and anything after it (a pipelined request) is still dropped, never handled."""

    __slots__ = ("_body",)

    def __init__(self, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._body: StreamReader | None = None  # the payload of the latest request whose headers came in

    def data_received(self, data: bytes) -> None:
        body = self._body
        if (self._close or self._force_close) and body is not None and not body.is_eof() and self._parser:
            try:
                self._parser.feed_data(data)  # into ``body``; a request after it is parsed and left unhandled
            except HttpProcessingError as exc:  # a malformed body: its reader raises, the handler answers 400
                if not body.is_eof():  # (not a malformed request after a whole body)
                    body.set_exception(exc)
            return
        super().data_received(data)
        if self._messages:
            self._body = self._messages[-1][1]


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
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            # aiohttp's own protocol as ``server()`` makes it (Server.__call__), with the change above.
            lambda: _HeaderDeadline(_HearsOutBodies(server, loop=loop, **server._kwargs), timeout),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port

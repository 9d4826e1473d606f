"""HTTP/1.1 POSTs over pooled keep-alive connections: all the SQS client needs of HTTP.

Why not aiohttp: the bridge makes two calls for every ten messages, and
aiohttp's request path (request and response objects, header multidicts,
tracing hooks, the connector's bookkeeping, its streams) was about 40% of
the bridge's CPU (docs/performance.md). SQS needs one kind of exchange: a
POST with a small body and a few headers, answered by a status, two headers
and a body of known length. So this sends exactly that over asyncio streams,
one request at a time per connection, and keeps connections open between
calls.

What it handles: ``Content-Length`` and ``chunked`` bodies, a body ended by
the server closing (no length given), ``Connection: close``, HTTP/1.0
answers, TLS for ``https`` URLs, a connect timeout and a timeout on the
whole exchange. A connection found closed by the server while it was idle
is replaced and the request sent again once, before any answer byte (the
usual keep-alive race); any other failure is raised as it is, for the
caller's own retry policy.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

# The largest header block accepted (the reader's buffer limit, too).
MAX_HEADER_BYTES = 64 * 1024


class HttpProtocolError(Exception):
    """The server's answer is not HTTP/1.x as this client reads it."""


@dataclass(frozen=True)
class HttpResponse:
    """A status, the headers (names in lower case) and the whole body."""

    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Origin:
    """Where connections go: scheme, host and port of a URL."""

    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> Origin:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        default = 443 if parts.scheme == "https" else 80
        return cls(parts.scheme, parts.hostname, parts.port or default)


def request_target(url: str) -> str:
    """The path and query of *url*, as the request line names them."""
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def encode_request(target: str, headers: dict[str, str], body: bytes) -> bytes:
    """A POST request's bytes; *headers* must hold ``Host``."""
    lines = [f"POST {target} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def parse_head(head: bytes) -> tuple[str, int, dict[str, str]]:
    """(HTTP version, status, headers with names in lower case) of a header block."""
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    status = rest[:3]
    if not version.startswith("HTTP/1.") or not status.isdigit():
        raise HttpProtocolError(f"not an HTTP/1.x status line: {lines[0][:60]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise HttpProtocolError("a header line without a colon")
        headers[name.strip().lower()] = value.strip()
    return version, int(status), headers


def keeps_alive(version: str, headers: dict[str, str]) -> bool:
    """Whether the connection may carry the next request after this answer."""
    connection = headers.get("connection", "").lower()
    if version == "HTTP/1.0":
        return connection == "keep-alive"
    return connection != "close"


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.used = False  # has carried an exchange: may have been closed by the server since

    def idle_and_open(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()

    async def exchange(self, request: bytes) -> tuple[HttpResponse, bool]:
        """Send *request*, read its answer; (the answer, whether to keep the connection)."""
        self.used = True
        self.writer.write(request)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        version, status, headers = parse_head(head[:-4])
        if 100 <= status < 200:  # never asked for (no Expect), but skip it if sent
            return await self.exchange(b"")
        reusable = keeps_alive(version, headers)
        if status in (204, 304):
            body = b""
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = await self._chunked()
        elif "content-length" in headers:
            body = await self.reader.readexactly(_length(headers["content-length"]))
        else:
            body, reusable = await self.reader.read(), False
        return HttpResponse(status, headers, body), reusable

    async def _chunked(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            size_line = await self.reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip() or b"x", 16)
            if size == 0:
                while (await self.reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                return b"".join(chunks)
            chunks.append(await self.reader.readexactly(size))
            if await self.reader.readexactly(2) != b"\r\n":
                raise HttpProtocolError("a chunk not followed by CRLF")


def _length(value: str) -> int:
    if not value.isdigit():
        raise HttpProtocolError("Content-Length is not a number")
    return int(value)


class HttpPool:
    """Keep-alive connections to one origin, at most *connections* at a time."""

    def __init__(
        self,
        origin: Origin,
        connections: int,
        connect_timeout: float,
        read_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.origin = origin
        self._slots = asyncio.Semaphore(connections)
        self._idle: list[_Connection] = []
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._ssl: ssl.SSLContext | None = None
        if origin.scheme == "https":
            self._ssl = ssl_context or ssl.create_default_context()

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> HttpResponse:
        """POST *body* to *url* (on this pool's origin) with *headers* (``Host`` included).

        Raises OSError (connection failures), TimeoutError,
        asyncio.IncompleteReadError, asyncio.LimitOverrunError or
        :class:`HttpProtocolError`.
        """
        request = encode_request(request_target(url), headers, body)
        async with self._slots:
            connection = await self._connection()
            try:
                async with asyncio.timeout(self._read_timeout):
                    reused = connection.used
                    try:
                        response, reusable = await connection.exchange(request)
                    except (ConnectionError, asyncio.IncompleteReadError) as exc:
                        if not reused or not _before_any_answer(exc):
                            raise
                        connection.close()  # closed by the server while idle: once more
                        connection = await self._connect()
                        response, reusable = await connection.exchange(request)
            except BaseException:
                connection.close()
                raise
            if reusable:
                self._idle.append(connection)
            else:
                connection.close()
            return response

    async def _connection(self) -> _Connection:
        while self._idle:
            connection = self._idle.pop()
            if connection.idle_and_open():
                return connection
            connection.close()
        return await self._connect()

    async def _connect(self) -> _Connection:
        async with asyncio.timeout(self._connect_timeout):
            reader, writer = await asyncio.open_connection(
                self.origin.host,
                self.origin.port,
                ssl=self._ssl,
                limit=MAX_HEADER_BYTES,
            )
        return _Connection(reader, writer)

    def close(self) -> None:
        """Close the idle connections (those in use close when their exchange ends)."""
        while self._idle:
            self._idle.pop().close()


def _before_any_answer(exc: BaseException) -> bool:
    """Whether the failure came before a byte of the answer was read."""
    if isinstance(exc, asyncio.IncompleteReadError):
        return not exc.partial
    return True

"""An HTTP proxy in front of an SQS server that fails a share of the calls.

It forwards each request on a connection of its own to the server, except:

- a share of requests (*error_rate*) is answered by the proxy itself, never
  reaching the server: half with ``500 InternalFailure``, half with the
  throttling error (``RequestThrottled``, HTTP 400 as SQS sends it), in the
  request's own protocol (JSON or XML);
- a share of requests (*reset_rate*) is forwarded, and the server's answer
  is cut halfway: the proxy sends the first half and resets the connection,
  as a network failure mid-answer does. The server did the work (messages
  received are now invisible, deletes happened); the client never learns.

It runs as a process of its own (``python -m tests.support.sqs_fault_proxy``),
listens on 127.0.0.1 only, prints ``listening 127.0.0.1:PORT``, and on
SIGTERM prints what it did: ``forwarded=N errors=N resets=N``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from bench.latency_proxy import serve_until_stopped

JSON_ERRORS = {
    500: b'{"__type":"InternalFailure","message":"injected by the fault proxy"}',
    400: b'{"__type":"com.amazonaws.sqs#RequestThrottled","message":"injected: slow down"}',
}
XML_ERRORS = {
    500: b"<ErrorResponse><Error><Type>Receiver</Type><Code>InternalFailure</Code>"
    b"<Message>injected by the fault proxy</Message></Error></ErrorResponse>",
    400: b"<ErrorResponse><Error><Type>Sender</Type><Code>RequestThrottled</Code>"
    b"<Message>injected: slow down</Message></Error></ErrorResponse>",
}


@dataclass
class Tally:
    forwarded: int = 0
    errors: int = 0
    resets: int = 0


async def read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    """One HTTP message: (head, body), or None at the end of the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(b":") for line in head.split(b"\r\n")[1:] if line)
    }
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        body = b""
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            body += size_line + chunk
            if size == 0:
                return head, body
    length = int(headers.get(b"content-length", b"0"))
    return head, await reader.readexactly(length)


def error_answer(request_head: bytes, status: int) -> bytes:
    is_json = b"x-amz-json" in request_head.lower()
    body = (JSON_ERRORS if is_json else XML_ERRORS)[status]
    kind = b"application/x-amz-json-1.0" if is_json else b"text/xml"
    reason = b"Internal Server Error" if status == 500 else b"Bad Request"
    return b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (
        status,
        reason,
        kind,
        len(body),
        body,
    )


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST rather than FIN: the peer sees a connection reset."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def serve(
    target: tuple[str, int], error_rate: float, reset_rate: float, seed: int, tally: Tally
) -> asyncio.Server:
    rng = random.Random(seed)

    async def connection(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r: asyncio.StreamReader | None = None
        server_w: asyncio.StreamWriter | None = None
        try:
            while (request := await read_message(client_r)) is not None:
                head, body = request
                draw = rng.random()
                if draw < error_rate:
                    tally.errors += 1
                    client_w.write(error_answer(head, 500 if draw < error_rate / 2 else 400))
                    await client_w.drain()
                    continue
                if server_w is None:
                    server_r, server_w = await asyncio.open_connection(*target)
                assert server_r is not None
                server_w.write(head + body)
                await server_w.drain()
                answer = await read_message(server_r)
                if answer is None:
                    break
                data = answer[0] + answer[1]
                if draw < error_rate + reset_rate:
                    tally.resets += 1
                    client_w.write(data[: len(data) // 2])
                    await client_w.drain()
                    reset(client_w)
                    return
                tally.forwarded += 1
                client_w.write(data)
                await client_w.drain()
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        finally:
            if server_w is not None:
                server_w.close()
            client_w.close()

    return await asyncio.start_server(connection, "127.0.0.1", 0)


async def main_async(target: tuple[str, int], error_rate: float, reset_rate: float) -> None:
    tally = Tally()
    await serve_until_stopped(await serve(target, error_rate, reset_rate, seed=1, tally=tally))
    print(f"forwarded={tally.forwarded} errors={tally.errors} resets={tally.resets}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.sqs_fault_proxy")
    parser.add_argument("--target", required=True, help="loopback HOST:PORT of the SQS server")
    parser.add_argument("--error-rate", type=float, default=0.05)
    parser.add_argument("--reset-rate", type=float, default=0.01)
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    if host not in ("127.0.0.1", "localhost"):
        parser.error("--target must be on loopback")
    asyncio.run(main_async((host, int(port)), args.error_rate, args.reset_rate))
    return 0


class FaultProxy:
    """The proxy as a child process: its URL while it runs, its tally once stopped."""

    def __init__(self, endpoint_url: str, error_rate: float, reset_rate: float) -> None:
        target = urlsplit(endpoint_url)
        self._scheme = target.scheme
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.sqs_fault_proxy",
                "--target",
                f"{target.hostname}:{target.port}",
                "--error-rate",
                str(error_rate),
                "--reset-rate",
                str(reset_rate),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        words = self._process.stdout.readline().split()
        if len(words) != 2 or words[0] != "listening":
            self._process.kill()
            raise RuntimeError(f"fault proxy did not start: {words}")
        self.netloc = words[1]

    @property
    def url(self) -> str:
        return f"{self._scheme}://{self.netloc}"

    def through(self, url: str) -> str:
        """*url* (a queue URL) with the proxy's host and port."""
        return urlsplit(url)._replace(netloc=self.netloc).geturl()

    def kill(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def stop(self) -> dict[str, int]:
        """Stop the proxy; what it did: forwarded, errors, resets."""
        self._process.terminate()
        out, _ = self._process.communicate(timeout=30)
        counts = dict(word.split("=") for word in out.split())
        return {name: int(value) for name, value in counts.items()}


@contextlib.contextmanager
def fault_proxy(endpoint_url: str, error_rate: float, reset_rate: float) -> Iterator[FaultProxy]:
    proxy = FaultProxy(endpoint_url, error_rate, reset_rate)
    try:
        yield proxy
    finally:
        proxy.kill()


if __name__ == "__main__":
    raise SystemExit(main())

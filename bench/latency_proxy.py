"""A loopback TCP proxy that delays every client-to-server chunk: a remote SQS, locally.

Loopback ElasticMQ answers in about a millisecond, AWS SQS in 10-30 ms; a
bridge that keeps up locally can still be bound by its number of open calls
against the real thing. Putting this proxy in front of ElasticMQ (point the
SQS endpoint and the queue URL at it) adds *delay* to every request while
keeping each connection's bytes in order, so the benchmark measures what
concurrency and batching buy at a realistic latency.

It runs as a process of its own (``python -m bench.latency_proxy``), so its
CPU is never counted as the bridge's. It listens on 127.0.0.1 only and
forwards only to a loopback address.

    python -m bench.latency_proxy --target 127.0.0.1:9324 --delay-ms 20
    # prints "listening 127.0.0.1:PORT", then proxies until SIGTERM
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import signal
import subprocess
import sys
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

CHUNK_BYTES = 65_536


def loopback(host: str) -> bool:
    """Whether *host* names this machine (the proxy refuses to send anywhere else)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Server to client: passed on as it comes."""
    try:
        while data := await reader.read(CHUNK_BYTES):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def _copy_delayed(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float
) -> None:
    """Client to server: each chunk leaves *delay* seconds after it arrived, in order.

    Reading goes on while earlier chunks wait, so the delay adds latency
    without limiting throughput, like a long network path.
    """
    loop = asyncio.get_running_loop()
    pending: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await pending.get()
            if not data:
                return
            await asyncio.sleep(max(0.0, due - loop.time()))
            writer.write(data)
            await writer.drain()

    delivering = asyncio.ensure_future(deliver())
    try:
        while True:
            data = await reader.read(CHUNK_BYTES)
            pending.put_nowait((loop.time() + delay, data))
            if not data:
                break
        await delivering
    finally:
        delivering.cancel()
        writer.close()


async def _serve(target_host: str, target_port: int, delay: float) -> None:
    async def connect(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(target_host, target_port)
        except OSError:
            client_w.close()
            return
        # Cancelled when the proxy stops with connections open: nothing to report.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(
                _copy_delayed(client_r, server_w, delay),
                _copy(server_r, client_w),
                return_exceptions=True,
            )

    await serve_until_stopped(await asyncio.start_server(connect, "127.0.0.1", 0))


async def serve_until_stopped(server: asyncio.Server) -> None:
    """Print ``listening HOST:PORT`` (what the parent waits for), then serve until
    SIGTERM or SIGINT."""
    host, port = server.sockets[0].getsockname()[:2]
    print(f"listening {host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.latency_proxy")
    parser.add_argument("--target", required=True, help="loopback HOST:PORT to forward to")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="added to each request")
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    if not loopback(host):
        parser.error(f"--target must be a loopback address, not {host!r}")
    asyncio.run(_serve(host, int(port), args.delay_ms / 1000))
    return 0


def _with_netloc(url: str, netloc: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=netloc))


@contextlib.contextmanager
def latency_proxy(endpoint_url: str, delay_ms: float) -> Iterator[str]:
    """Run a proxy in front of *endpoint_url*; yield the proxy's own URL (same scheme, path)."""
    target = urlsplit(endpoint_url)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.latency_proxy",
            "--target",
            f"{target.hostname}:{target.port}",
            "--delay-ms",
            str(delay_ms),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().split()
        if len(line) != 2 or line[0] != "listening":
            raise RuntimeError(f"latency proxy did not start: {line}")
        yield _with_netloc(endpoint_url, line[1])
    finally:
        process.terminate()
        process.wait(timeout=10)


def through(url: str, proxy_url: str) -> str:
    """*url* (e.g. a queue URL) with its host and port replaced by the proxy's."""
    return _with_netloc(url, urlsplit(proxy_url).netloc)


if __name__ == "__main__":
    raise SystemExit(main())

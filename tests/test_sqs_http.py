"""The SQS client's HTTP/1.1 connections (bridge.sqs.http) against a scripted
loopback server: the framings servers use, keep-alive, and a connection the
server closed while it sat idle. (The SQS calls themselves are tested against
ElasticMQ in test_sqs_client.py and the bridge's tests.)"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from bridge.sqs.http import HttpPool, HttpProtocolError, Origin, encode_request, parse_head

Answer = Callable[[bytes], Awaitable[bytes | None]]


async def serve(
    answers: list[bytes | None], test: Callable[[HttpPool, list[int]], Awaitable[None]]
) -> None:
    """Answer each request with the next of *answers* (None: close the
    connection without answering); *test* gets a pool and the list of the
    connections each request came on."""
    connections: list[int] = []
    counter = iter(range(1_000_000))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = next(counter)
        try:
            while answers:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(
                    parse_head(b"HTTP/1.1 200 OK" + head[head.index(b"\r\n") : -4])[2][
                        "content-length"
                    ]
                )
                await reader.readexactly(length)
                connections.append(number)
                answer = answers.pop(0)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if b"Connection: close" in answer or b"HTTP/1.0" in answer:
                    break  # as a server does after such an answer
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = HttpPool(Origin("http", "127.0.0.1", port), 2, 5.0, 5.0)
    try:
        await test(pool, connections)
    finally:
        pool.close()
        server.close()


def post(pool: HttpPool) -> Awaitable:
    port = pool.origin.port
    return pool.post(f"http://127.0.0.1:{port}/q?x=1", {"Host": f"127.0.0.1:{port}"}, b"{}")


def test_a_request_is_a_post_with_its_length() -> None:
    request = encode_request("/", {"Host": "h", "X-Amz-Target": "AmazonSQS.ReceiveMessage"}, b"{}")
    assert request == (
        b"POST / HTTP/1.1\r\nHost: h\r\nX-Amz-Target: AmazonSQS.ReceiveMessage\r\n"
        b"Content-Length: 2\r\n\r\n{}"
    )


def test_answers_of_every_framing_are_read_whole_and_keep_alive_is_used() -> None:
    answers: list[bytes | None] = [
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\n"
        b"Content-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n",
        b"HTTP/1.1 400 Bad Request\r\nx-amzn-query-error: AWS.SimpleQueueService.X;Sender\r\n"
        b"Content-Length: 0\r\n\r\n",
    ]

    async def test(pool: HttpPool, connections: list[int]) -> None:
        first = await post(pool)
        assert (first.status, first.body) == (200, b"hello")
        assert first.headers["content-type"] == "application/x-amz-json-1.0"
        assert (await post(pool)).body == b"abcde"
        third = await post(pool)
        assert (third.status, third.body) == (400, b"")
        assert third.headers["x-amzn-query-error"] == "AWS.SimpleQueueService.X;Sender"
        assert connections == [0, 0, 0]  # one connection, kept alive

    asyncio.run(serve(answers, test))


def test_a_body_ended_by_the_server_closing_and_connection_close_end_the_connection() -> None:
    answers: list[bytes | None] = [
        b"HTTP/1.0 200 OK\r\n\r\nto the end",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlast",
    ]

    async def test(pool: HttpPool, connections: list[int]) -> None:
        assert (await post(pool)).body == b"to the end"
        assert (await post(pool)).body == b"ok"
        assert (await post(pool)).body == b"last"
        assert connections == [0, 1, 2]

    asyncio.run(serve(answers, test))


def test_a_connection_the_server_closed_while_idle_is_replaced_once() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    # The second request finds its kept-alive connection closed without an answer.
    answers: list[bytes | None] = [ok, None, ok]

    async def test(pool: HttpPool, connections: list[int]) -> None:
        assert (await post(pool)).body == b"ok"
        assert (await post(pool)).body == b"ok"
        assert connections == [0, 0, 1]

    asyncio.run(serve(answers, test))


def test_a_fresh_connection_closed_without_an_answer_is_an_error() -> None:
    async def test(pool: HttpPool, connections: list[int]) -> None:
        with pytest.raises(asyncio.IncompleteReadError):
            await post(pool)

    asyncio.run(serve([None], test))


def test_what_is_not_http_is_a_protocol_error() -> None:
    async def test(pool: HttpPool, connections: list[int]) -> None:
        with pytest.raises(HttpProtocolError):
            await post(pool)

    asyncio.run(serve([b"SSH-2.0-OpenSSH\r\n\r\n"], test))


def test_an_unreachable_origin_raises_a_connection_error() -> None:
    async def test() -> None:
        pool = HttpPool(Origin("http", "127.0.0.1", 1), 1, 5.0, 5.0)
        with pytest.raises(OSError):
            await post(pool)

    asyncio.run(test())

"""Why a status call failed, in a few words for its line (never a traceback).

The SQS client, aiokafka and psycopg each wrap the socket's error their own way; the
three collectors share these rules so that one cause reads the same on every
line.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable


def _chain(exc: BaseException) -> Iterable[BaseException]:
    """*exc* and the exceptions it was raised from, innermost last."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if exc.errno == errno.ECONNREFUSED:
        return "connection refused"
    if exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    return str(exc) or type(exc).__name__


def _libpq_reason(message: str) -> str:
    """The useful end of a libpq message: 'connection refused', 'database "x" does not exist'."""
    first = message.strip().splitlines()[0] if message.strip() else message
    if "failed: " in first:
        first = first.rsplit("failed: ", 1)[1]
    first = first.removeprefix("FATAL:").strip()
    return first[:1].lower() + first[1:] if first else "connection failed"


def _socket_error(exc: BaseException) -> OSError | None:
    """The socket-level error behind *exc*, if there is one."""
    for link in _chain(exc):
        if isinstance(link, OSError) and (
            link.errno is not None or isinstance(link, TimeoutError | socket.gaierror)
        ):
            return link
    return None


def describe_error(exc: BaseException) -> str:
    """A few words saying why a call failed, for a status line (never a traceback).

    Socket errors are looked for anywhere in the exception's chain, since
    the SQS client and aiokafka wrap them; PostgreSQL's message is cut to its reason.
    """
    socket_error = _socket_error(exc)
    if socket_error is not None:
        return _os_reason(socket_error)
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        error = response["Error"]
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
    if type(exc).__module__.startswith("bridge.sqs"):
        return str(exc)
    if type(exc).__module__.startswith("psycopg"):
        return _libpq_reason(str(exc))
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def failure_verb(exc: BaseException) -> str:
    """'unreachable' when the network failed, 'error' when the service or client said no."""
    return "unreachable" if _socket_error(exc) is not None else "error"

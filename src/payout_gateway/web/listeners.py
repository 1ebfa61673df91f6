"""Listening sockets for ``serve --workers N``: one per worker, with the kernel spreading
connections over them.

uvicorn's supervisor binds one socket and hands it to every worker, so all workers accept
from one queue, and whichever is awake takes every connection waiting there: measured with
``--workers 2`` and 32 keep-alive connections opened together, one worker held all 32 and
the other served nothing. A client that keeps its connections open (a backend with a
connection pool) is then served by one process whatever the worker count. With
``SO_REUSEPORT`` each worker listens on a socket of its own bound to the same address, and
Linux hands each new connection to one of them by a hash of its addresses.
"""

from __future__ import annotations

import socket
import sys
from typing import Any


class WorkerListener(socket.socket):
    """The supervisor's socket: bound with ``SO_REUSEPORT`` and never listened on, so it
    reserves the address (an address in use fails here, before any worker starts) and takes
    no connection itself.

    uvicorn's supervisor sends its sockets to every worker it starts, restarts included, by
    pickling them; this one arrives as a new socket of the worker's own, bound to the same
    address, which the worker's server then listens on."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (bind_reuse_port, (self.family, self.getsockname()))


def bind_reuse_port(
    family: socket.AddressFamily,
    address: tuple[Any, ...],
    cls: type[socket.socket] = socket.socket,
) -> socket.socket:
    """A TCP socket bound to ``address`` with ``SO_REUSEPORT`` (and ``SO_REUSEADDR``, as
    uvicorn binds)."""
    sock = cls(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


def worker_listener(host: str, port: int) -> socket.socket | None:
    """The supervisor's :class:`WorkerListener` for ``host:port``; None where the kernel does
    not spread connections over ``SO_REUSEPORT`` sockets (only Linux does: elsewhere the
    last socket bound would take them all), and uvicorn's shared socket is used instead."""
    if not sys.platform.startswith("linux") or not hasattr(socket, "SO_REUSEPORT"):
        return None
    # As uvicorn decides it: an IPv6 literal has a colon.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return bind_reuse_port(family, (host, port), WorkerListener)

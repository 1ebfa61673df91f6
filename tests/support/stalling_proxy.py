"""A loopback TCP proxy that can stall: its connections stay open and nothing more crosses
them, as when a server's host freezes or the network between drops every packet. The server
never closes anything, so the client is told nothing; only its own timeouts can end a wait.
Or it can hold the server's answers a while (a slow network, a paused host) and then deliver
them: what the client sent was done, though it heard of it late."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress


class StallingProxy:
    """Forwards ``127.0.0.1:port`` to ``target`` on threads of its own (usable from any event
    loop or none) until ``stall()``; ``resume()`` lets bytes through again, for connections
    opened since. Connections open during a stall stay stalled: the client must give them
    up, as it must after a real partition."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._stalled = threading.Event()
        self._released = threading.Event()
        self._released.set()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="stalling-proxy", daemon=True).start()

    def stall(self) -> None:
        self._stalled.set()

    def resume(self) -> None:
        """Only connections opened from now on carry bytes: the stalled ones hold what they
        read while stalled, which a resumed stream could not deliver in order anyway."""
        with self._lock:
            self._stalled = threading.Event()

    def hold(self) -> None:
        """From now on the server's answers wait, in order, until ``release``; what clients
        send still reaches the server."""
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self._listener.close()
        self._released.set()
        with self._lock:
            for sock in self._sockets:
                with suppress(OSError):
                    sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
                stalled = self._stalled
            for source, sink, released in (
                (client, upstream, None),
                (upstream, client, self._released),
            ):
                threading.Thread(
                    target=self._pump, args=(source, sink, stalled, released), daemon=True
                ).start()

    @staticmethod
    def _pump(
        source: socket.socket,
        sink: socket.socket,
        stalled: threading.Event,
        released: threading.Event | None,
    ) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                with suppress(OSError):
                    sink.shutdown(socket.SHUT_WR)
                return
            if stalled.is_set():
                # Read and dropped: the sender's kernel sees its bytes taken, as when the
                # network loses them after its buffers, and nothing ever answers.
                continue
            if released is not None:
                released.wait()
            try:
                sink.sendall(data)
            except OSError:
                return


@contextmanager
def stalling_proxy(target: tuple[str, int]) -> Iterator[StallingProxy]:
    proxy = StallingProxy(target)
    try:
        yield proxy
    finally:
        proxy.close()

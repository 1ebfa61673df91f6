"""``serve --workers N`` listens on a socket per worker, and Linux spreads connections over
them (web/listeners.py)."""

from __future__ import annotations

import contextlib
import io
import socket
import sys
from collections.abc import Iterator
from contextlib import ExitStack, closing
from multiprocessing.reduction import ForkingPickler

import pytest

from payout_gateway.web.listeners import WorkerListener, worker_listener

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="SO_REUSEPORT balances connections on Linux"
)


def as_a_worker_receives_it(listener: socket.socket) -> socket.socket:
    """What a worker process unpickles: uvicorn's supervisor pickles its sockets with
    multiprocessing's pickler for every worker it spawns."""
    buffer = io.BytesIO()
    ForkingPickler(buffer).dump(listener)
    received = ForkingPickler.loads(buffer.getvalue())
    assert isinstance(received, socket.socket)
    return received


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = worker_listener("127.0.0.1", 0)
    assert isinstance(sock, WorkerListener)
    with closing(sock):
        yield sock


def test_each_worker_gets_a_socket_of_its_own_on_the_same_address(
    listener: socket.socket,
) -> None:
    with (
        closing(as_a_worker_receives_it(listener)) as first,
        closing(as_a_worker_receives_it(listener)) as second,
    ):
        assert type(first) is socket.socket  # not a placeholder again
        assert first.fileno() != second.fileno() != listener.fileno()
        assert first.getsockname() == second.getsockname() == listener.getsockname()
        assert first.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
        # Sockets of their own, not descriptors of one socket (which uvicorn's shared socket
        # is): one worker listening leaves the other, and the supervisor's, as they were. The
        # supervisor's never listens: it would take connections nobody accepts.
        first.listen()
        assert second.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0
        assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0


def test_connections_opened_together_are_spread_over_the_workers(
    listener: socket.socket,
) -> None:
    with ExitStack() as stack:
        workers = [stack.enter_context(closing(as_a_worker_receives_it(listener))) for _ in "ab"]
        for worker in workers:
            worker.listen(64)
            worker.setblocking(False)
        clients = [
            stack.enter_context(socket.create_connection(listener.getsockname()[:2]))
            for _ in range(32)
        ]
        # The kernel has queued every connection once create_connection returned. Each
        # worker takes all it can, in turn, as the first one awake would: one shared queue
        # would leave nothing for the second.
        accepted = []
        for worker in workers:
            taken = 0
            with contextlib.suppress(BlockingIOError):
                while True:
                    stack.enter_context(closing(worker.accept()[0]))
                    taken += 1
            accepted.append(taken)
        assert sum(accepted) == len(clients), accepted
    # One shared queue gave one worker all 32; by hash, each gets fewer than 4 of 32 about
    # once in a million runs.
    assert min(accepted) >= 4, accepted


def test_an_address_in_use_fails_in_the_supervisor() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError, match="in use"):
            worker_listener("127.0.0.1", taken.getsockname()[1])

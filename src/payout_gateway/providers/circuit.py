"""A provider's circuit breaker: after consecutive failed requests, calls fail fast until a probe
succeeds.

While a provider is down, every call to it would otherwise wait out its timeouts and retries (up
to the 25 s deadline), holding a connection and the caller's request all that time, and keep
knocking on a provider that is trying to come back. Here ``failures`` failed requests in a row
(each attempt of a call is one: transport.ProviderHttp asks before every attempt) open the
circuit: calls then fail at once, with nothing sent, for ``reset_seconds``. The first request
after that is the probe, and the only one let through while it is in flight; its success closes
the circuit, its failure opens it for another ``reset_seconds``.

A request ends in one of three ways, and the third matters: it succeeded (the provider
answered), it failed (no usable answer: unreachable, timed out, a 5xx), or it decided nothing
(cancelled, or stopped on the gateway's side). pybreaker and circuitbreaker, the well-known
libraries, count every exception they are told to ignore as a success (a cancelled probe would
close the circuit) and let every concurrent call through once the circuit is half-open; the
breaker the gateway needs is this one state machine instead.

One breaker per provider client, i.e. per provider and process: a provider's outage is the
same for every organization, and the other provider's calls never wait on it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from enum import StrEnum

logger = logging.getLogger("payout_gateway.providers")


class CircuitState(StrEnum):
    CLOSED = "closed"  # calls go through; failures in a row are counted
    OPEN = "open"  # requests are refused until ``reset_seconds`` have passed
    HALF_OPEN = "half_open"  # one probe goes through; the rest are refused


class CircuitOpen(Exception):
    """The request was not made: the circuit is open, or a probe is in flight."""

    def __init__(self, failures: int, retry_in: float) -> None:
        super().__init__(failures, retry_in)
        self.failures = failures
        self.retry_in = retry_in


class CircuitBreaker:
    """The circuit of one provider's requests (see the module's docstring). Not thread-safe:
    one event loop's calls use it, with no await between a decision and its bookkeeping."""

    def __init__(
        self,
        name: str,
        *,
        failures: int = 5,
        reset_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 1 or reset_seconds <= 0:
            raise ValueError("a circuit opens after at least one failure, for some time")
        self.name = name
        self.failures = failures
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._state = CircuitState.CLOSED
        self._failed_in_a_row = 0
        self._opened_at = 0.0
        self._probing = False

    @property
    def state(self) -> CircuitState:
        return self._state

    def admit(self) -> bool:
        """Let a request through, or raise ``CircuitOpen``. True: the request is the probe,
        whose outcome decides the circuit; report every admitted request's outcome
        (``succeeded``, ``failed`` or ``undecided``) with it."""
        if self._state is CircuitState.CLOSED:
            return False
        if self._state is CircuitState.OPEN:
            waited = self._clock() - self._opened_at
            if waited < self.reset_seconds:
                raise CircuitOpen(self._failed_in_a_row, self.reset_seconds - waited)
            self._state = CircuitState.HALF_OPEN
            logger.info("%s circuit half-open: one request probes the provider", self.name)
        if self._probing:
            raise CircuitOpen(self._failed_in_a_row, 0.0)
        self._probing = True
        return True

    def admits(self) -> bool:
        """Whether ``admit`` would let a request through now; changes nothing."""
        if self._state is CircuitState.CLOSED:
            return True
        if self._state is CircuitState.OPEN:
            return self._clock() - self._opened_at >= self.reset_seconds
        return not self._probing

    def succeeded(self, probe: bool) -> None:
        """The provider answered. A request let through before the circuit opened changes
        nothing once it is open: only the probe closes it."""
        if self._state is CircuitState.CLOSED:
            self._failed_in_a_row = 0
        elif probe:
            self._probing = False
            self._state = CircuitState.CLOSED
            self._failed_in_a_row = 0
            logger.info("%s circuit closed: the probe got an answer", self.name)

    def failed(self, probe: bool) -> None:
        """No usable answer."""
        if self._state is CircuitState.CLOSED:
            self._failed_in_a_row += 1
            if self._failed_in_a_row >= self.failures:
                self._open()
        elif probe:
            self._probing = False
            self._failed_in_a_row += 1
            self._open()

    def undecided(self, probe: bool) -> None:
        """The request ended without showing whether the provider works (cancelled, stopped
        on the gateway's side): nothing is counted, and a probe's place goes to the next."""
        if probe:
            self._probing = False

    def _open(self) -> None:
        self._state = CircuitState.OPEN
        self._opened_at = self._clock()
        logger.warning(
            "%s circuit opened after %d failed requests in a row: calls fail at once for %g s",
            self.name,
            self._failed_in_a_row,
            self.reset_seconds,
        )

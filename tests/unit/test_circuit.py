"""The provider circuit breaker's state machine, on a clock the tests move."""

from __future__ import annotations

import logging

import pytest

from payout_gateway.providers.circuit import CircuitBreaker, CircuitOpen, CircuitState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker("COMMET", failures=5, reset_seconds=30.0, clock=clock)


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.failed(breaker.admit())


def open_circuit(breaker: CircuitBreaker) -> None:
    fail(breaker, breaker.failures)
    assert breaker.state is CircuitState.OPEN


def test_failures_in_a_row_open_the_circuit(breaker: CircuitBreaker) -> None:
    fail(breaker, 4)
    assert breaker.state is CircuitState.CLOSED
    assert breaker.admit() is False  # the fifth call still goes through
    breaker.failed(False)
    assert breaker.state is CircuitState.OPEN
    with pytest.raises(CircuitOpen) as caught:
        breaker.admit()
    assert caught.value.failures == 5
    assert caught.value.retry_in == 30.0


def test_a_success_starts_the_count_again(breaker: CircuitBreaker) -> None:
    fail(breaker, 4)
    breaker.succeeded(breaker.admit())
    fail(breaker, 4)
    assert breaker.state is CircuitState.CLOSED


def test_an_undecided_call_neither_counts_nor_resets(breaker: CircuitBreaker) -> None:
    fail(breaker, 4)
    breaker.undecided(breaker.admit())
    assert breaker.state is CircuitState.CLOSED
    fail(breaker, 1)
    assert breaker.state is CircuitState.OPEN


def test_an_open_circuit_refuses_calls_until_its_time_is_up(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    open_circuit(breaker)
    clock.now += 29.5
    with pytest.raises(CircuitOpen) as caught:
        breaker.admit()
    assert caught.value.retry_in == pytest.approx(0.5)
    clock.now += 0.5
    assert breaker.admit() is True  # the probe
    assert breaker.state is CircuitState.HALF_OPEN


def test_only_one_probe_goes_through_at_a_time(breaker: CircuitBreaker, clock: Clock) -> None:
    open_circuit(breaker)
    clock.now += 30
    assert breaker.admit() is True
    for _ in range(3):
        with pytest.raises(CircuitOpen):
            breaker.admit()


def test_the_probe_s_answer_closes_the_circuit(breaker: CircuitBreaker, clock: Clock) -> None:
    open_circuit(breaker)
    clock.now += 30
    breaker.succeeded(breaker.admit())
    assert breaker.state is CircuitState.CLOSED
    assert breaker.admit() is False
    # Closed afresh: it takes the full count of failures to open again.
    fail(breaker, 4)
    assert breaker.state is CircuitState.CLOSED


def test_a_failed_probe_opens_the_circuit_for_another_period(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    open_circuit(breaker)
    clock.now += 30
    breaker.failed(breaker.admit())
    assert breaker.state is CircuitState.OPEN
    clock.now += 29
    with pytest.raises(CircuitOpen):
        breaker.admit()
    clock.now += 1
    assert breaker.admit() is True


def test_an_undecided_probe_hands_its_place_to_the_next_call(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    open_circuit(breaker)
    clock.now += 30
    breaker.undecided(breaker.admit())
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.admit() is True


def test_calls_let_through_before_it_opened_do_not_decide_it(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    early = [breaker.admit() for _ in range(2)]  # in flight while the circuit opens
    open_circuit(breaker)
    breaker.succeeded(early[0])
    breaker.failed(early[1])
    assert breaker.state is CircuitState.OPEN
    clock.now += 29
    with pytest.raises(CircuitOpen):  # the late failure did not restart the period either
        breaker.admit()
    clock.now += 1
    probe = breaker.admit()
    assert probe is True
    breaker.succeeded(probe)
    assert breaker.state is CircuitState.CLOSED


def test_state_changes_are_logged(
    breaker: CircuitBreaker, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="payout_gateway.providers")
    open_circuit(breaker)
    clock.now += 30
    breaker.succeeded(breaker.admit())
    assert [(record.levelname, record.getMessage()) for record in caplog.records] == [
        (
            "WARNING",
            "COMMET circuit opened after 5 failed requests in a row: calls fail at once for 30 s",
        ),
        ("INFO", "COMMET circuit half-open: one request probes the provider"),
        ("INFO", "COMMET circuit closed: the probe got an answer"),
    ]


@pytest.mark.parametrize(("failures", "reset_seconds"), [(0, 30.0), (5, 0.0), (5, -1.0)])
def test_a_circuit_that_could_never_close_or_open_is_refused(
    failures: int, reset_seconds: float
) -> None:
    with pytest.raises(ValueError, match="at least one failure"):
        CircuitBreaker("COMMET", failures=failures, reset_seconds=reset_seconds)


def test_admits_tells_what_admit_would_do_without_changing_anything(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    assert breaker.admits()
    open_circuit(breaker)
    assert not breaker.admits()
    clock.now += 30
    assert breaker.admits()
    assert breaker.state is CircuitState.OPEN  # asking moved nothing
    probe = breaker.admit()
    assert not breaker.admits()  # the probe is out
    breaker.undecided(probe)
    assert breaker.admits()

"""app/retry.py: the one backoff, and retry_call for one-shot calls."""

from __future__ import annotations

import pytest

from app.retry import Backoff, GaveUp, retry_call


def test_backoff_doubles_up_to_the_cap_and_resets() -> None:
    backoff = Backoff(initial=0.5, cap=4.0, jitter=0.2, rand=lambda: 0.0)
    assert [backoff.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next() == 0.5


def test_backoff_jitter_only_shortens_the_delay() -> None:
    backoff = Backoff(initial=10.0, cap=10.0, jitter=0.2, rand=lambda: 1.0)
    assert backoff.next() == pytest.approx(8.0)


def test_backoff_survives_many_attempts() -> None:
    backoff = Backoff(initial=1.0, cap=30.0, rand=lambda: 0.0, attempts=10_000)
    assert backoff.next() == 30.0


class Flaky:
    """Fails with the scripted exceptions, then returns the number of calls."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return self.calls


def _backoff() -> Backoff:
    return Backoff(initial=1.0, cap=4.0, rand=lambda: 0.0)


def test_retry_call_retries_until_it_returns_sleeping_the_backoff() -> None:
    slept: list[float] = []
    retried: list[str] = []
    call = Flaky(OSError("a"), OSError("b"))
    result = retry_call(
        call,
        backoff=_backoff(),
        sleep=slept.append,
        on_retry=lambda exc, delay: retried.append(f"{exc} {delay}"),
    )
    assert result == 3
    assert slept == [1.0, 2.0]
    assert retried == ["a 1.0", "b 2.0"]


def test_retry_call_raises_a_refused_failure_at_once() -> None:
    call = Flaky(KeyError("not retryable"))
    with pytest.raises(KeyError):
        retry_call(
            call, backoff=_backoff(), retry_if=lambda exc: isinstance(exc, OSError), sleep=lambda _: None
        )
    assert call.calls == 1


def test_retry_call_gives_up_after_the_attempts_with_the_last_failure() -> None:
    call = Flaky(OSError("1"), OSError("2"), OSError("3"))
    with pytest.raises(GaveUp) as caught:
        retry_call(call, backoff=_backoff(), attempts=2, sleep=lambda _: None)
    assert call.calls == 2
    assert caught.value.attempts == 2
    assert str(caught.value.last) == "2"
    assert caught.value.__cause__ is caught.value.last


def test_retry_call_gives_up_when_the_next_delay_passes_the_deadline() -> None:
    call = Flaky(OSError("1"), OSError("2"))
    slept: list[float] = []
    with pytest.raises(GaveUp):
        retry_call(
            call, backoff=Backoff(initial=10.0, rand=lambda: 0.0), deadline_seconds=5, sleep=slept.append
        )
    assert call.calls == 1
    assert slept == []

"""Slowing down password guessing (tether.delegation.throttle)."""

from __future__ import annotations

import pytest

from tether.delegation.throttle import SignInThrottle
from tether.errors import TemporarilyUnavailable


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_name_guessed_too_often_is_refused_until_the_window_moves_on() -> None:
    ticks = Ticks()
    throttle = SignInThrottle(per_name=3, per_address=100, window=60, monotonic=ticks)
    for _ in range(3):
        throttle.check(name="alice", address="192.0.2.1")
        throttle.failed(name="alice", address="192.0.2.1")
    with pytest.raises(TemporarilyUnavailable, match="too many failed sign-ins"):
        throttle.check(name="alice", address="198.51.100.9")  # from anywhere
    throttle.check(name="bob", address="198.51.100.9")  # another name is not held back
    ticks.now += 60
    throttle.check(name="alice", address="192.0.2.1")


def test_an_address_guessing_many_names_is_refused() -> None:
    throttle = SignInThrottle(per_name=100, per_address=4, window=60, monotonic=Ticks())
    for name in ("a", "b", "c", "d"):
        throttle.failed(name=name, address="203.0.113.5")
    with pytest.raises(TemporarilyUnavailable):
        throttle.check(name="e", address="203.0.113.5")
    throttle.check(name="e", address="203.0.113.6")


def test_a_success_clears_the_names_count() -> None:
    throttle = SignInThrottle(per_name=2, per_address=100, window=60, monotonic=Ticks())
    throttle.failed(name="alice", address=None)
    throttle.succeeded(name="alice")
    throttle.failed(name="alice", address=None)
    throttle.check(name="alice", address=None)

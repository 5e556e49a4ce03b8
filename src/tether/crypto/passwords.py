"""Users' passwords: Argon2id (RFC 9106) through ``argon2-cffi``, off the event loop.

Argon2id is memory-hard, the first choice of OWASP's password storage guide. The default cost
is RFC 9106 §4's second recommended option (t=3, 64 MiB, p=4): about 0.15 s of one core here,
so hashing runs in a worker thread, and at most ``max_concurrent`` hashes run at once (each
holds its memory while it runs), so a burst of sign-ins queues instead of exhausting memory;
beyond ``max_waiting`` in line, a sign-in is refused at once (``temporarily_unavailable``)
rather than left to wait behind a flood.

A sign-in for a name that does not exist still costs one verification (against a hash made at
start-up), so the time of an answer does not tell which names exist.

Example::

    hasher = PasswordHasher.fast_for_tests()
    stored = await hasher.hash("correct horse battery staple")
    await hasher.verify(stored, "correct horse battery staple")     # None, or Unauthenticated
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from tether.errors import InvalidInput, TemporarilyUnavailable, Unauthenticated

__all__ = ["MAX_PASSWORD", "MIN_PASSWORD", "PasswordCost", "PasswordHasher"]

#: NIST SP 800-63B asks verifiers to accept at least 64 characters; the cap bounds the work one
#: request can ask for.
MIN_PASSWORD = 12
MAX_PASSWORD = 256


@dataclass(frozen=True, kw_only=True)
class PasswordCost:
    time_cost: int = 3
    memory_kib: int = 64 * 1024
    parallelism: int = 4


class PasswordHasher:
    def __init__(
        self, cost: PasswordCost | None = None, *, max_concurrent: int = 2, max_waiting: int = 32
    ) -> None:
        cost = cost or PasswordCost()
        self._hasher = argon2.PasswordHasher(
            time_cost=cost.time_cost,
            memory_cost=cost.memory_kib,
            parallelism=cost.parallelism,
            type=argon2.Type.ID,
        )
        self._slots = asyncio.Semaphore(max_concurrent)
        self._max_waiting = max_waiting
        self._waiting = 0
        self._decoy: str | None = None

    @classmethod
    def fast_for_tests(cls) -> PasswordHasher:
        """The lowest cost argon2 accepts: for tests only, never for stored passwords."""
        return cls(PasswordCost(time_cost=1, memory_kib=8, parallelism=1))

    @staticmethod
    def check_new(password: str) -> None:
        """A new password must be 12 to 256 characters (no other composition rules, as NIST
        SP 800-63B advises)."""
        if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise InvalidInput(
                f"a password is {MIN_PASSWORD} to {MAX_PASSWORD} characters",
                details={"field": "password"},
            )

    async def hash(self, password: str) -> str:
        self.check_new(password)
        async with self._slot():
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, stored: str | None, password: str) -> None:
        """Raise ``Unauthenticated`` unless ``password`` matches ``stored``. ``None`` (no such
        user, or no password) is checked against a decoy hash all the same, and refused."""
        if len(password) > MAX_PASSWORD:
            raise Unauthenticated("wrong name or password")
        target = stored if stored is not None else await self._decoy_hash()
        async with self._slot():
            try:
                await asyncio.to_thread(self._hasher.verify, target, password)
            except (VerifyMismatchError, VerificationError, InvalidHashError) as exc:
                raise Unauthenticated("wrong name or password") from exc
        if stored is None:
            raise Unauthenticated("wrong name or password")

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        """One of the hashing slots; beyond ``max_waiting`` callers in line, a refusal
        (``temporarily_unavailable``) rather than a queue that grows without end."""
        if self._waiting >= self._max_waiting:
            raise TemporarilyUnavailable("too many sign-ins at once; try again in a moment")
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            self._slots.release()

    def needs_rehash(self, stored: str) -> bool:
        """True when ``stored`` was made with other parameters than this hasher's."""
        try:
            return self._hasher.check_needs_rehash(stored)
        except InvalidHashError:
            return True

    async def _decoy_hash(self) -> str:
        if self._decoy is None:
            self._decoy = await self.hash(secrets.token_urlsafe(24))
        return self._decoy

"""Users' passwords (tether.crypto.passwords): Argon2id hashes, length rules, decoy checks."""

from __future__ import annotations

import pytest

from tether.crypto.passwords import MAX_PASSWORD, MIN_PASSWORD, PasswordCost, PasswordHasher
from tether.errors import InvalidInput, Unauthenticated

PASSWORD = "correct horse battery staple"


def decoy_of(hasher: PasswordHasher) -> str | None:
    """The decoy hash a missing stored hash is checked against (made on first need)."""
    return hasher._decoy


@pytest.fixture
def hasher() -> PasswordHasher:
    return PasswordHasher.fast_for_tests()


async def test_a_hashed_password_verifies(hasher: PasswordHasher) -> None:
    stored = await hasher.hash(PASSWORD)
    assert await hasher.verify(stored, PASSWORD) is None  # type: ignore[func-returns-value]


async def test_each_hash_is_salted_afresh(hasher: PasswordHasher) -> None:
    assert await hasher.hash(PASSWORD) != await hasher.hash(PASSWORD)


@pytest.mark.parametrize(
    "attempt",
    [PASSWORD + "!", PASSWORD.upper(), PASSWORD[:-1], "", "x" * (MAX_PASSWORD + 1)],
    ids=["suffix", "case", "truncated", "empty", "overlong"],
)
async def test_a_wrong_password_is_unauthenticated(hasher: PasswordHasher, attempt: str) -> None:
    stored = await hasher.hash(PASSWORD)
    with pytest.raises(Unauthenticated, match="wrong name or password"):
        await hasher.verify(stored, attempt)


async def test_no_stored_hash_is_refused_after_spending_a_verification(
    hasher: PasswordHasher,
) -> None:
    assert decoy_of(hasher) is None
    with pytest.raises(Unauthenticated, match="wrong name or password"):
        await hasher.verify(None, PASSWORD)
    decoy = decoy_of(hasher)
    assert decoy is not None
    assert decoy.startswith("$argon2id$")
    # The decoy is made once and checked against on every missing hash.
    with pytest.raises(Unauthenticated, match="wrong name or password"):
        await hasher.verify(None, PASSWORD)
    assert decoy_of(hasher) == decoy


async def test_a_garbage_stored_hash_is_unauthenticated(hasher: PasswordHasher) -> None:
    with pytest.raises(Unauthenticated, match="wrong name or password"):
        await hasher.verify("not-a-phc-string", PASSWORD)


@pytest.mark.parametrize(
    "length", [0, 1, MIN_PASSWORD - 1, MAX_PASSWORD + 1, 10_000], ids=lambda n: f"len{n}"
)
async def test_a_new_password_outside_12_to_256_characters_is_refused(
    hasher: PasswordHasher, length: int
) -> None:
    with pytest.raises(InvalidInput, match="12 to 256 characters") as caught:
        await hasher.hash("p" * length)
    assert caught.value.details == {"field": "password"}


@pytest.mark.parametrize("length", [MIN_PASSWORD, MAX_PASSWORD], ids=lambda n: f"len{n}")
async def test_a_new_password_of_12_to_256_characters_is_accepted(
    hasher: PasswordHasher, length: int
) -> None:
    password = "p" * length
    await hasher.verify(await hasher.hash(password), password)


def test_the_length_bounds_are_12_and_256() -> None:
    assert (MIN_PASSWORD, MAX_PASSWORD) == (12, 256)
    PasswordHasher.check_new("x" * 12)
    with pytest.raises(InvalidInput):
        PasswordHasher.check_new("x" * 11)


async def test_the_stored_string_is_an_argon2id_phc_string_without_the_password(
    hasher: PasswordHasher,
) -> None:
    stored = await hasher.hash(PASSWORD)
    assert stored.startswith("$argon2id$v=19$m=8,t=1,p=1$")
    assert PASSWORD not in stored
    assert PASSWORD.encode().hex() not in stored


def test_the_default_cost_is_rfc_9106_second_recommendation() -> None:
    assert PasswordCost() == PasswordCost(time_cost=3, memory_kib=64 * 1024, parallelism=4)


async def test_a_hash_of_the_same_parameters_needs_no_rehash(hasher: PasswordHasher) -> None:
    assert not hasher.needs_rehash(await hasher.hash(PASSWORD))


@pytest.mark.parametrize(
    "cost",
    [
        PasswordCost(time_cost=2, memory_kib=8, parallelism=1),
        PasswordCost(time_cost=1, memory_kib=16, parallelism=1),
        PasswordCost(time_cost=1, memory_kib=16, parallelism=2),
    ],
    ids=["time", "memory", "parallelism"],
)
async def test_a_hash_of_other_parameters_needs_rehash(
    hasher: PasswordHasher, cost: PasswordCost
) -> None:
    older = await PasswordHasher(cost).hash(PASSWORD)
    assert hasher.needs_rehash(older)
    # ...and still verifies, so it can be rehashed at the next sign-in.
    await hasher.verify(older, PASSWORD)


@pytest.mark.parametrize("garbage", ["", "garbage", "$argon2id$", "$2b$12$abcdefghijklmnop"])
def test_garbage_needs_rehash(hasher: PasswordHasher, garbage: str) -> None:
    assert hasher.needs_rehash(garbage)

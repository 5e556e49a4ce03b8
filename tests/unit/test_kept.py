"""Hot-path caches stay bounded, and a derived value is only reused for its own object."""

from __future__ import annotations

from tether._internal.kept import Kept, KeptFor


def test_a_full_cache_starts_over_but_replacing_a_key_does_not() -> None:
    kept: Kept[str, int] = Kept(limit=2)
    kept.put("a", 1)
    kept.put("b", 2)
    kept.put("b", 20)  # a key already kept: no room needed
    assert (kept.get("a"), kept.get("b"), len(kept)) == (1, 20, 2)
    kept.put("c", 3)
    assert (kept.get("a"), kept.get("b"), kept.get("c"), len(kept)) == (None, None, 3, 1)


def test_a_derived_value_is_reused_only_for_the_very_same_object() -> None:
    calls: list[object] = []

    def derive(source: list[str]) -> str:
        calls.append(source)
        return ",".join(source)

    kept: KeptFor[str, list[str], str] = KeptFor(limit=10)
    first = ["read"]
    assert kept.derived("agent", first, derive) == "read"
    assert kept.derived("agent", first, derive) == "read"
    equal_but_new = ["read"]
    assert kept.derived("agent", equal_but_new, derive) == "read"
    assert len(calls) == 2  # the second object is derived afresh, even though it is equal

"""The public surface is explicit: ``tether.__all__`` is exactly the curated names, sorted."""

from __future__ import annotations

import tether
import tether.errors


def test_public_names_are_exactly_the_curated_ones() -> None:
    assert tether.__all__ == [
        "ApprovalRequired",
        "AsyncClient",
        "CheckUnavailable",
        "Client",
        "Decision",
        "Denied",
        "Error",
        "Lease",
        "StatementDenied",
        "__version__",
        "current_async_client",
        "current_client",
        "guard",
    ]


def test_all_lists_are_sorted_and_resolve() -> None:
    for module in (tether, tether.errors):
        assert module.__all__ == sorted(module.__all__)
        for name in module.__all__:
            assert hasattr(module, name), name


def test_every_error_has_a_unique_stable_code() -> None:
    classes = [getattr(tether.errors, n) for n in tether.errors.__all__]
    leaf_codes = [c.code for c in classes if not c.__subclasses__()]
    assert len(leaf_codes) == len(set(leaf_codes))
    assert all(c.code.replace("_", "").isalpha() for c in classes)


def test_every_error_class_is_exported() -> None:
    defined = {
        name
        for name, value in vars(tether.errors).items()
        if isinstance(value, type) and issubclass(value, tether.errors.Error)
    }
    assert defined == set(tether.errors.__all__)

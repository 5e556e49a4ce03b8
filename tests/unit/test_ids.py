"""Ids: 128 random bits as 26 characters of lower-case base32."""

from __future__ import annotations

import base64
import re

from hypothesis import given
from hypothesis import strategies as st

from tether._internal.ids import base32, new_id


@given(raw=st.binary(min_size=16, max_size=16))
def test_base32_is_rfc4648_lower_case_unpadded(raw: bytes) -> None:
    assert base32(raw) == base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def test_new_ids_carry_the_prefix_and_26_base32_characters_and_differ() -> None:
    ids = {new_id("lea") for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"lea_[a-z2-7]{26}", i) for i in ids)

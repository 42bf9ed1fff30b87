"""Hypothesis strategies for the input classes issue 12 found as 500s: text PostgreSQL cannot store,
numbers JSON cannot hold, timestamps at the calendar's edges, points past a program's limit. Shared
by the validation property tests and the ledger's invariant tests (which mix them into their
sequences: a refused request must leave the books as they were)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

# Every code point, surrogates included (Python strings may hold them; JSON escapes can produce them).
any_char = st.characters(codec=None, exclude_categories=())
any_text = st.text(any_char, max_size=20)
# What a client may send and PostgreSQL stores: no NUL, no surrogate.
storable_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=20)
# Text with at least one NUL or unpaired surrogate somewhere.
unstorable_text = st.builds(
    lambda a, bad, b: a + bad + b,
    storable_text,
    st.sampled_from(["\x00", "\ud800", "\udbff", "\udc00", "\udfff"]) | st.characters(categories=("Cs",)),
    storable_text,
)
# Printable one-line text, as reference, reason and member_ref take it.
printable_text = st.text(
    st.characters(exclude_categories=("Cs", "Cc"), exclude_characters="\x7f"), min_size=1, max_size=30
)

finite_floats = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e15, max_value=1e15)
non_finite_floats = st.sampled_from([float("nan"), float("inf"), float("-inf")])
huge_numbers = st.one_of(
    st.integers(min_value=2**63, max_value=10**40),
    st.integers(min_value=-(10**40), max_value=-(2**63)),
    st.floats(min_value=1e19, max_value=1e308),
)


def json_values(text: st.SearchStrategy[str] = storable_text) -> st.SearchStrategy[Any]:
    """JSON-like values (as `metadata` takes them) whose strings and keys come from `text`."""
    leaves = st.none() | st.booleans() | st.integers(-(2**62), 2**62) | finite_floats | text
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
        max_leaves=8,
    )


storable_metadata = st.dictionaries(storable_text, json_values(), max_size=4)
# Metadata with one bad leaf (unstorable text as a key or a value, a non-finite or huge number).
bad_metadata = st.one_of(
    st.builds(lambda k, v: {k: v}, unstorable_text, json_values()),
    st.builds(lambda k, v: {k: {"x": [v]}}, storable_text, unstorable_text),
    st.builds(lambda k, v: {k: v}, storable_text, non_finite_floats | huge_numbers),
)

offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
# Any instant Python can write with an offset, far outside the accepted range included.
any_instant = st.builds(
    lambda naive, tz: naive.replace(tzinfo=tz),
    st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31)),
    offsets,
)
# Out of range: before 2000-01-01 or from 2100-01-01 (UTC).
out_of_range_instant = any_instant.filter(
    lambda at: not datetime(2000, 1, 1, tzinfo=UTC) <= at < datetime(2100, 1, 1, tzinfo=UTC)
)

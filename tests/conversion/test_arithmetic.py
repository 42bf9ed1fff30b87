"""DESIGN §5 arithmetic, without a database: exact examples and properties over random rates."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from conversion_service.arithmetic import (
    Terms,
    cash_for_points,
    convert,
    fee_points,
    from_points_for,
    points_for_cash,
)

terms_st = st.builds(
    Terms,
    from_points=st.integers(1, 10**6),
    to_points=st.integers(1, 10**6),
    fee_bps=st.integers(0, 9999),
)
points_st = st.integers(1, 10**12)


def test_design_example() -> None:
    amounts = convert(5000, Terms(5, 1, 200))
    assert (amounts.fee_points, amounts.to_points) == (100, 980)
    assert from_points_for(980, Terms(5, 1, 200)) == 5000
    assert fee_points(1, 1) == 1  # any fee rounds up to a whole point
    assert fee_points(1000, 0) == 0


@settings(max_examples=400, deadline=None)
@given(terms_st, points_st)
def test_the_member_never_gets_more_than_the_rate_allows(terms: Terms, from_points: int) -> None:
    a = convert(from_points, terms)
    assert 0 <= a.fee_points <= from_points
    assert a.fee_points * 10_000 >= from_points * terms.fee_bps  # the fee is never rounded down
    net = from_points - a.fee_points
    assert a.to_points * terms.from_points <= net * terms.to_points  # never more than the rate allows
    assert (a.to_points + 1) * terms.from_points > net * terms.to_points  # and rounded down only once


@settings(max_examples=400, deadline=None)
@given(terms_st, st.integers(1, 10**9))
def test_by_to_points_gives_the_smallest_from_points(terms: Terms, wished: int) -> None:
    f = from_points_for(wished, terms)
    assert convert(f, terms).to_points >= wished
    assert f == 1 or convert(f - 1, terms).to_points < wished


@settings(max_examples=400, deadline=None)
@given(points_st, st.integers(1, 10**6), st.integers(1, 10**6), st.integers(1, 10**12))
def test_valuations_round_in_the_programs_favour(
    points: int, cash_points: int, cash_minor: int, cash: int
) -> None:
    value = cash_for_points(points, cash_points, cash_minor)
    assert value * cash_points <= points * cash_minor < (value + 1) * cash_points  # rounded down to the fen
    needed = points_for_cash(cash, cash_points, cash_minor)
    assert cash_for_points(needed, cash_points, cash_minor) >= cash  # enough to pay
    assert needed == 1 or cash_for_points(needed - 1, cash_points, cash_minor) < cash  # and not a point more

"""The arithmetic of DESIGN §5, in integers only, so every client can predict it.

- fee_points = ceil(from_points * fee_bps / 10000): the fee is taken from the source points and is
  never negative;
- to_points = floor((from_points - fee_points) * rate_to / rate_from): the member never receives
  more than the rate allows;
- by to_points: the smallest from_points whose to_points is at least the wish;
- valuations: points -> cash rounds down to the fen, cash -> points needed rounds up to the point.
"""

from __future__ import annotations

from dataclasses import dataclass

from conversion_service.schemas_common import BPS, MAX_POINTS


def ceil_div(a: int, b: int) -> int:
    """ceil(a / b) for a >= 0, b > 0, exactly."""
    return -(-a // b)


@dataclass(frozen=True)
class Terms:
    """The parts of a rate the amounts depend on."""

    from_points: int  # rate: `from_points` source points ...
    to_points: int  # ... buy `to_points` target points
    fee_bps: int  # 0..9999

    def __post_init__(self) -> None:
        if self.from_points <= 0 or self.to_points <= 0 or not 0 <= self.fee_bps < BPS:
            raise ValueError(f"invalid rate terms {self}")


@dataclass(frozen=True)
class Amounts:
    from_points: int
    fee_points: int
    to_points: int


def fee_points(from_points: int, fee_bps: int) -> int:
    return ceil_div(from_points * fee_bps, BPS)


def convert(from_points: int, terms: Terms) -> Amounts:
    """The amounts of converting `from_points`; to_points may be 0 or exceed 64 bits (callers check)."""
    fee = fee_points(from_points, terms.fee_bps)
    return Amounts(from_points, fee, (from_points - fee) * terms.to_points // terms.from_points)


def from_points_for(to_points: int, terms: Terms) -> int:
    """The smallest from_points whose conversion yields at least `to_points`.

    floor(net * to / from) >= T  <=>  net >= N = ceil(T * from / to); with fee = ceil(F * bps / 10000),
    net = F - fee = floor(F * (10000 - bps) / 10000), which is >= N
    <=>  F >= ceil(N * 10000 / (10000 - bps)).
    Since bps < 10000, net never decreases as F grows, so that F is the smallest.
    """
    net = ceil_div(to_points * terms.from_points, terms.to_points)
    return ceil_div(net * BPS, BPS - terms.fee_bps)


def fits(points: int) -> bool:
    return 0 < points <= MAX_POINTS


def cash_for_points(points: int, cash_points: int, cash_minor: int) -> int:
    """What `points` are worth, rounded down to the minor unit (`cash_points` points = `cash_minor`)."""
    return points * cash_minor // cash_points


def points_for_cash(cash: int, cash_points: int, cash_minor: int) -> int:
    """The points needed to pay `cash` minor units, rounded up to the point (cash_minor > 0)."""
    return ceil_div(cash * cash_points, cash_minor)

"""A realistic synthetic card-issuer file, for `jifen batch generate` and the batch benchmark:
skewed members and merchants, a mix of card numbers and member ids, refunds of earlier rows,
and a small share of bad rows (none with bad_share=0: then every row posts on the demo programs)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

HEADER = (
    "external_id,type,original_external_id,program,card_number,member_ref,amount_minor,currency,"
    "merchant_id,mcc,channel,occurred_at,points"
)
MCCS = ("5411", "5812", "5814", "5541", "4511", "5311", "5732", "5999", "7011", "4121")
CHANNELS = ("pos", "pos", "pos", "online", "online", "app")
PARTNERS = tuple(f"M-PARTNER-{i:02d}" for i in range(10))


def _card(member: int) -> str:
    return f"62220{member:014d}"


def rows(
    n: int,
    *,
    program: str = "BOC",
    members: int = 200_000,
    seed: int = 1,
    refund_share: float = 0.03,
    bad_share: float = 0.005,
    prefix: str = "TX",
) -> Iterator[str]:
    """Yields the header, then n data lines."""
    rng = random.Random(seed)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    yield HEADER
    earns: list[tuple[int, int]] = []  # recent (line, amount) that refunds can reference
    for i in range(1, n + 1):
        ext = f"{prefix}-{seed}-{i:09d}"
        at = (start + timedelta(seconds=i * 86_000 // max(n, 1))).isoformat().replace("+00:00", "Z")
        roll = rng.random()
        if roll < bad_share:
            yield rng.choice((
                f"{ext},earn,,{program},,m-1,-5,CNY,M-1,5411,pos,{at},",
                f"{ext},earn,,NOPE,,m-1,100,CNY,M-1,5411,pos,{at},",
                f"{ext},earn,,{program},,m-1,100,CNY,M-1,5411,pos,2999-01-01T00:00:00Z,",
                "garbage line",
            ))  # fmt: skip
            continue
        if roll < bad_share + refund_share and earns:
            # Each earn is refunded once at most, and a small one whole, so that every refund has
            # points to reverse (a share of a 1-point earn rounds to nothing).
            line, amount = earns.pop(rng.randrange(len(earns)))
            part = amount if amount < 2000 else max(1, amount * rng.choice((25, 50, 100)) // 100)
            yield f"{ext},reverse,{prefix}-{seed}-{line:09d},{program},,,{part},CNY,,,,{at},"
            continue
        member = int(members * rng.random() ** 3)  # a few members make most purchases
        amount = int(rng.lognormvariate(8.5, 1.0)) + 100  # fen; median about 50 CNY
        merchant = rng.choice(PARTNERS) if rng.random() < 0.1 else f"M-{int(5000 * rng.random() ** 2):05d}"
        who = f"{_card(member)}," if rng.random() < 0.7 else f",m-{member}"
        yield (f"{ext},earn,,{program},{who},{amount},CNY,{merchant},{rng.choice(MCCS)},"
               f"{rng.choice(CHANNELS)},{at},")  # fmt: skip
        earns.append((i, amount))
        if len(earns) > 5000:
            earns = earns[-2500:]


RULES = {
    "effective_from": "2020-01-01T00:00:00Z",
    "base": {"points": 1, "per_amount_minor": 100, "rounding": "down"},
    "rules": [
        {"name": "10x at partners", "match": {"merchant_id": list(PARTNERS)}, "multiplier": "10"},
        {"name": "2x travel", "match": {"mcc": ["4511", "7011"]}, "multiplier": "2"},
        {"name": "app bonus", "match": {"channel": "app"}, "bonus_points": 5},
    ],
    "caps": {"per_transaction": 50_000},
}

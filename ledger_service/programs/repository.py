"""SQL for programs and their system accounts."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

SYSTEM_ACCOUNTS = ("issuance", "redemption", "breakage", "conversion", "merchant", "adjustment")

_COLUMNS = """code, name, cash_points, cash_minor, currency, expiry, rollover_bps, tiers,
    tier_window_months, qualifying_kinds, allow_negative, tier_downgrade, expiry_notices_days, timezone,
    pending_days, returns_policy, created_at,
    updated_at, id"""

_INSERT = text(
    """
    INSERT INTO ledger.programs (code, name, cash_points, cash_minor, currency, expiry, rollover_bps,
        tiers, tier_window_months, qualifying_kinds, allow_negative, tier_downgrade, expiry_notices_days,
        timezone, pending_days, returns_policy)
    VALUES (:code, :name, :cash_points, :cash_minor, :currency, CAST(:expiry AS jsonb), :rollover_bps,
        CAST(:tiers AS jsonb), :tier_window_months, :qualifying_kinds, :allow_negative, :tier_downgrade,
        :expiry_notices_days, :timezone, :pending_days, :returns_policy)
    RETURNING id
    """
)
_SYSTEM = text(
    """
    WITH acc AS (
        INSERT INTO ledger.accounts (program_id, kind, member_ref)
        SELECT :program_id, k, '' FROM unnest(CAST(:kinds AS text[])) AS k
        RETURNING id, kind
    )
    UPDATE ledger.programs p SET
        issuance_account = (SELECT id FROM acc WHERE kind = 'issuance'),
        redemption_account = (SELECT id FROM acc WHERE kind = 'redemption'),
        breakage_account = (SELECT id FROM acc WHERE kind = 'breakage'),
        conversion_account = (SELECT id FROM acc WHERE kind = 'conversion'),
        merchant_account = (SELECT id FROM acc WHERE kind = 'merchant'),
        adjustment_account = (SELECT id FROM acc WHERE kind = 'adjustment')
    WHERE p.id = :program_id
    RETURNING """
    + _COLUMNS
)
_GET = text(f"SELECT {_COLUMNS} FROM ledger.programs WHERE code = :code")
_LIST = text(
    f"""SELECT {_COLUMNS} FROM ledger.programs
    WHERE id > :after AND (CAST(:codes AS text[]) IS NULL OR code = ANY (CAST(:codes AS text[])))
    ORDER BY id LIMIT :limit"""
)

_JSON_FIELDS = ("expiry", "tiers")


def _params(values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    for key in _JSON_FIELDS:
        if key in out:
            out[key] = orjson.dumps(out[key]).decode()
    cash = out.pop("cash_value", None)
    if cash is not None:
        out.update(cash_points=cash["points"], cash_minor=cash["cash_minor"], currency=cash["currency"])
    return out


class DuplicateProgram(Exception):
    pass


async def insert_program(conn: AsyncConnection, values: dict[str, Any]) -> RowMapping:
    try:
        async with conn.begin_nested():
            program_id = (await conn.execute(_INSERT, _params(values))).scalar_one()
    except IntegrityError as exc:
        raise DuplicateProgram(values["code"]) from exc
    row = await conn.execute(_SYSTEM, {"program_id": program_id, "kinds": list(SYSTEM_ACCOUNTS)})
    return row.mappings().one()


async def get_program(conn: AsyncConnection, code: str) -> RowMapping | None:
    return (await conn.execute(_GET, {"code": code})).mappings().first()


async def list_programs(
    conn: AsyncConnection, *, after: int, limit: int, codes: list[str] | None
) -> list[RowMapping]:
    rows = await conn.execute(_LIST, {"after": after, "limit": limit, "codes": codes})
    return list(rows.mappings().all())


async def update_program(conn: AsyncConnection, code: str, changes: dict[str, Any]) -> RowMapping | None:
    params = _params(changes)
    assignments = []
    for column in params:
        cast = "CAST(:{0} AS jsonb)" if column in _JSON_FIELDS else ":{0}"
        assignments.append(f"{column} = {cast.format(column)}")
    sql = text(
        f"UPDATE ledger.programs SET {', '.join(assignments)}, updated_at = now()"
        f" WHERE code = :code RETURNING {_COLUMNS}"
    )
    return (await conn.execute(sql, {**params, "code": code})).mappings().first()


KNOWN_CODES = "SELECT code FROM ledger.programs WHERE code = ANY ($1::text[])"

"""Segment criteria: typed conditions over member profiles, nested with all / any, checked and
compiled to one SQL condition with bound parameters (field names come only from the table below).

    {"all": [{"field": "tag", "op": "eq", "value": "dormant"},
             {"any": [{"field": "lifetime_earned", "op": "gte", "value": 10000},
                      {"field": "tier", "op": "in", "value": ["gold", "platinum"]}]}]}
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

TAGS = ("new", "active", "dormant", "never_redeemed", "expiring_soon", "high_value")
CHANNELS = ("pos", "online", "app")
MAX_DEPTH = 5
MAX_CONDITIONS = 50
MAX_LIST = 100
NEVER_DAYS = 2**31 - 1  # "days since" a member who never did it: longer than any threshold

_WINDOWED = tuple(
    f"{name}_{days}d" for name in ("earned_points", "earn_count", "redeemed_points") for days in (30, 90, 365)
)
_PROFILE_NUMBERS = (
    *_WINDOWED,
    "lifetime_earned",
    "lifetime_redeemed",
    "lifetime_expired",
    "expiring_points_30d",
    "expiring_points_90d",
    "balance",
)
# field -> SQL over member_profiles p and its program g; $1 is the evaluation time. Days since are
# local days of the program's calendar (its timezone), like the profile's windows: yesterday at 23:30
# is one day ago at 00:30 today.
_DAYS_SINCE = (
    "coalesce(($1::timestamptz AT TIME ZONE g.timezone)::date - (p.{column} AT TIME ZONE g.timezone)::date,"
    " {never})"
)
NUMBER_FIELDS: dict[str, str] = {name: f"p.{name}" for name in _PROFILE_NUMBERS} | {
    "days_since_last_earn": _DAYS_SINCE.format(column="last_earn_at", never=NEVER_DAYS),
    "days_since_last_burn": _DAYS_SINCE.format(column="last_burn_at", never=NEVER_DAYS),
}
# set-valued fields: eq = the member has the value, ne = has not, in = has any of them
SET_FIELDS: dict[str, str] = {"tag": "p.tags", "mcc": "p.top_mcc", "channel": "p.channels"}
FIELDS = (*NUMBER_FIELDS, "tier", *SET_FIELDS)
OPS = ("eq", "ne", "in", "gte", "lte", "between")
_MCC = re.compile(r"^[0-9]{4}$")
_TIER = re.compile(r"^[a-z0-9_-]{1,32}$")


class CriteriaError(ValueError):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


@dataclass
class Compiled:
    """The SQL condition and its parameters. $1 is the evaluation time; the condition's own
    parameters are numbered from base + 1 (the caller's query binds $2 .. $base itself)."""

    base: int = 1
    sql: str = ""
    params: list[Any] = field(default_factory=list)
    conditions: int = 0

    def bind(self, value: Any) -> str:
        self.params.append(value)
        return f"${self.base + len(self.params)}"


def _integer(path: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CriteriaError(path, "must be an integer")
    if abs(value) >= 2**63:
        raise CriteriaError(path, "is out of range")
    return value


def _text(name: str, path: str, value: Any) -> str:
    if not isinstance(value, str):
        raise CriteriaError(path, "must be a string")
    if name == "tag" and value not in TAGS:
        raise CriteriaError(path, f"unknown tag {value!r}; tags are {', '.join(TAGS)}")
    if name == "channel" and value not in CHANNELS:
        raise CriteriaError(path, f"unknown channel {value!r}; channels are {', '.join(CHANNELS)}")
    if name == "mcc" and not _MCC.match(value):
        raise CriteriaError(path, "an mcc is four digits")
    if name == "tier" and not _TIER.match(value):
        raise CriteriaError(path, "a tier code is 1-32 characters a-z, 0-9, _ or -")
    return value


def _list(path: str, value: Any) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise CriteriaError(path, "`in` takes a non-empty list")
    if len(value) > MAX_LIST:
        raise CriteriaError(path, f"at most {MAX_LIST} values")
    return value


def _number_condition(c: Compiled, expr: str, op: str, value: Any, path: str) -> str:
    if op in ("eq", "ne", "gte", "lte"):
        sql_op = {"eq": "=", "ne": "<>", "gte": ">=", "lte": "<="}[op]
        return f"{expr} {sql_op} {c.bind(_integer(path + '.value', value))}::numeric"
    if op == "in":
        values = [_integer(f"{path}.value[{i}]", v) for i, v in enumerate(_list(path + ".value", value))]
        return f"{expr} = ANY ({c.bind(values)}::numeric[])"
    if not isinstance(value, list) or len(value) != 2:
        raise CriteriaError(path + ".value", "`between` takes [low, high]")
    low, high = _integer(path + ".value[0]", value[0]), _integer(path + ".value[1]", value[1])
    if low > high:
        raise CriteriaError(path + ".value", "low must not be above high")
    return f"{expr} BETWEEN {c.bind(low)}::numeric AND {c.bind(high)}::numeric"


def _text_condition(c: Compiled, name: str, op: str, value: Any, path: str) -> str:
    if op not in ("eq", "ne", "in"):
        raise CriteriaError(path + ".op", f"{name} takes eq, ne or in")
    if op == "in":
        values = [_text(name, f"{path}.value[{i}]", v) for i, v in enumerate(_list(path + ".value", value))]
        if name == "tier":
            return f"p.tier = ANY ({c.bind(values)}::text[])"
        return f"{SET_FIELDS[name]} && {c.bind(values)}::text[]"
    one = c.bind(_text(name, path + ".value", value))
    if name == "tier":
        return f"p.tier {'=' if op == 'eq' else '<>'} {one}::text"
    has = f"{one}::text = ANY ({SET_FIELDS[name]})"
    return has if op == "eq" else f"NOT ({has})"


def _condition(c: Compiled, node: dict[str, Any], path: str) -> str:
    unknown = set(node) - {"field", "op", "value"}
    if unknown or "field" not in node or "op" not in node or "value" not in node:
        raise CriteriaError(path, "a condition is {field, op, value}")
    name, op, value = node["field"], node["op"], node["value"]
    if name not in FIELDS:
        raise CriteriaError(path + ".field", f"unknown field {name!r}; fields are {', '.join(FIELDS)}")
    if op not in OPS:
        raise CriteriaError(path + ".op", f"unknown op {op!r}; ops are {', '.join(OPS)}")
    c.conditions += 1
    if c.conditions > MAX_CONDITIONS:
        raise CriteriaError(path, f"at most {MAX_CONDITIONS} conditions")
    if name in NUMBER_FIELDS:
        return _number_condition(c, NUMBER_FIELDS[name], op, value, path)
    return _text_condition(c, name, op, value, path)


def _node(c: Compiled, node: Any, path: str, depth: int) -> str:
    if not isinstance(node, dict):
        raise CriteriaError(path, "must be an object")
    if "field" in node or "op" in node:
        return _condition(c, node, path)
    if len(node) != 1 or next(iter(node)) not in ("all", "any"):
        raise CriteriaError(path, 'a group is {"all": [...]} or {"any": [...]}')
    kind, children = next(iter(node.items()))
    if depth > MAX_DEPTH:
        raise CriteriaError(path, f"groups nest at most {MAX_DEPTH} deep")
    if not isinstance(children, list) or not children:
        raise CriteriaError(f"{path}.{kind}", "must be a non-empty list")
    parts = [_node(c, child, f"{path}.{kind}[{i}]", depth + 1) for i, child in enumerate(children)]
    return "(" + (" AND " if kind == "all" else " OR ").join(parts) + ")"


def compile_criteria(criteria: Any, *, base: int = 1) -> Compiled:
    """The SQL condition over `ledger.member_profiles p` for these criteria, or CriteriaError."""
    if not isinstance(criteria, dict) or set(criteria) - {"all", "any"} or len(criteria) != 1:
        raise CriteriaError("criteria", 'the top level is {"all": [...]} or {"any": [...]}')
    c = Compiled(base=base)
    c.sql = _node(c, criteria, "criteria", 1)
    return c

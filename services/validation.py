"""What every service refuses in a request before anything is stored (DESIGN §4 "Changes in force"),
so that a value PostgreSQL cannot take is a 422 with a field error, never a 500 from the database.

- Text: PostgreSQL's `text` and `jsonb` cannot hold a NUL character (U+0000), and a string with an
  unpaired surrogate (U+D800..U+DFFF, which JSON's `\\ud800` escapes can produce) cannot be encoded
  as UTF-8 at all. Either is `invalid_text`, wherever it is in a body: a field, a key or a value deep
  inside `metadata`. Request models inherit `StrictBody`, which checks every field.
- Numbers in free-form JSON: a float that is not finite (NaN, Infinity: Python's JSON parser takes
  them, JSON and jsonb do not) is `invalid_number`.
- Timestamps: from 2000-01-01 (inclusive) to 2100-01-01 (exclusive) UTC. Nothing a points ledger
  books happened earlier, and the range keeps every date arithmetic the services and PostgreSQL do
  (time zones, month and period boundaries, expiry years later) far from the calendar's ends, where
  an offset such as +17:18 on the year 1 no longer converts to UTC. `occurred_at` outside it is
  `occurred_at_out_of_range`; any other timestamp (`as_of`, `effective_from`, ...) is
  `timestamp_out_of_range`. A service may narrow the range further (an earn is refused 5 minutes
  into the future, a burn 30 days back).

The errors are pydantic custom errors with these types; services/errors.py answers a request whose
field errors all have one such type with that code (and each field error carries its code).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)

INVALID_TEXT = "invalid_text"
INVALID_NUMBER = "invalid_number"
OCCURRED_AT_OUT_OF_RANGE = "occurred_at_out_of_range"
TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
# The field error types that are also a problem's `code` (DESIGN §4).
CODES = frozenset({INVALID_TEXT, INVALID_NUMBER, OCCURRED_AT_OUT_OF_RANGE, TIMESTAMP_OUT_OF_RANGE})

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable_text(value: str) -> bool:
    """True when PostgreSQL can store `value` in text or jsonb."""
    # The common case is one C-level scan; the regex only for the rare string that may hold either.
    return "\x00" not in value and (value.isascii() or _UNSTORABLE.search(value) is None)


def check_value(value: Any) -> None:
    """Raises invalid_text / invalid_number for anything in `value` (a str, a number, or JSON-like
    dicts and lists of them) that PostgreSQL could not store."""
    kind = type(value)
    if kind is str:
        if not storable_text(value):
            raise PydanticCustomError(
                INVALID_TEXT, "text must not hold a NUL character or an unpaired surrogate"
            )
    elif kind is float:
        if not math.isfinite(value):
            raise PydanticCustomError(INVALID_NUMBER, "numbers must be finite")
    elif kind is dict:
        for key, item in value.items():
            check_value(key)
            check_value(item)
    elif kind is list or kind is tuple:
        for item in value:
            check_value(item)


def body_examples(*examples: dict[str, Any]) -> ConfigDict:
    """The config of a request body (no unknown fields) with its examples for the OpenAPI document."""
    return ConfigDict(extra="forbid", json_schema_extra={"examples": list(examples)})


class StrictBody(BaseModel):
    """The base of request bodies: no unknown fields, nothing PostgreSQL could not store. Nested
    models check their own fields (they inherit this too); other values are walked here."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        if type(value) in (str, float, dict, list, tuple):
            check_value(value)
        return value


def check_patch(body: BaseModel, nullable: frozenset[str] = frozenset()) -> None:
    """A PATCH body changes at least one field, and sets to null only the fields that may be null."""
    if not body.model_fields_set:
        raise ValueError("send at least one field to change")
    for name in body.model_fields_set - nullable:
        if getattr(body, name) is None:
            raise ValueError(f"{name} cannot be null")


def _in_range(code: str, what: str) -> Any:
    def check(value: datetime) -> datetime:
        if not EARLIEST <= value < LATEST:
            raise PydanticCustomError(code, f"{what} must be from 2000-01-01 to 2100-01-01 (UTC)")
        return value

    return check


OccurredAt = Annotated[
    AwareDatetime,
    AfterValidator(_in_range(OCCURRED_AT_OUT_OF_RANGE, "occurred_at")),
    Field(description="RFC 3339 with an offset; from 2000-01-01 to 2100-01-01"),
]
Timestamp = Annotated[
    AwareDatetime,
    AfterValidator(_in_range(TIMESTAMP_OUT_OF_RANGE, "a timestamp")),
    Field(description="RFC 3339 with an offset; from 2000-01-01 to 2100-01-01"),
]

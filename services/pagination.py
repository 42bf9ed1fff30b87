"""Opaque cursors for `?limit=&cursor=` lists (DESIGN §3)."""

from __future__ import annotations

import base64
from typing import Any

from services.errors import BadRequest


def encode_cursor(value: int) -> str:
    return base64.urlsafe_b64encode(str(value).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    if cursor is None or cursor == "":
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = int(base64.urlsafe_b64decode(padded.encode()).decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("The cursor is not one this API returned.", code="invalid_cursor") from exc
    if value < 0:
        raise BadRequest("The cursor is not one this API returned.", code="invalid_cursor")
    return value


def page_of(rows: list[Any], limit: int, key: str) -> tuple[list[Any], str | None]:
    """A list read as `limit + 1` rows: the page (the first `limit`), and the cursor past its last row
    (that row's `key`) when there is more, else None."""
    page = rows[:limit]
    return page, encode_cursor(page[-1][key]) if len(rows) > limit else None

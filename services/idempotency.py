"""The Idempotency-Key header (DESIGN §3): parsing, and the fingerprint of a request body.

Where the key is recorded depends on the service: the ledger records it inside its posting
function, in the same database transaction as the postings.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

import orjson
from fastapi import Header

from services.errors import BadRequest

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"


def _check(key: str | None) -> str:
    if key is None or key == "":
        raise BadRequest(
            "This operation requires an Idempotency-Key header (1-255 printable characters).",
            code="idempotency_key_required",
        )
    if len(key) > 255 or not key.isprintable() or not key.isascii():
        raise BadRequest(
            "Idempotency-Key must be 1-255 printable ASCII characters.", code="invalid_idempotency_key"
        )
    return key


async def idempotency_key(
    key: Annotated[
        str | None,
        Header(
            alias=IDEMPOTENCY_HEADER,
            description="Required. 1-255 printable characters, unique per intended operation; "
            "a retry with the same key and body returns the original response.",
            examples=["pos-42-order-7781-earn"],
        ),
    ] = None,
) -> str:
    return _check(key)


def canonical_json(payload: Any) -> bytes:
    """The body as sorted-key JSON, so key order and whitespace do not make two bodies differ."""
    return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)


def fingerprint(operation: str, canonical: bytes) -> bytes:
    return hashlib.sha256(operation.encode() + b"\n" + canonical).digest()

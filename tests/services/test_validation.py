"""services/validation.py against PostgreSQL itself: what it accepts, text and jsonb store; what it
refuses, they would have refused (a 500 before issue 12)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ledger_service.schemas_common import Metadata
from services.validation import EARLIEST, LATEST, OccurredAt, StrictBody, storable_text
from tests import strategies as s

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))


class Body(StrictBody):
    text: str | None = None
    metadata: Metadata = None
    occurred_at: OccurredAt | None = None


class Plain(StrictBody):
    value: Any = None


@pytest.fixture(scope="module")
async def pg(database_url: str):
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        yield conn
    finally:
        await conn.close()


async def _pg_stores(conn: asyncpg.Connection, text: str) -> bool:
    """Whether PostgreSQL takes `text` as text and, inside a JSON document, as jsonb."""
    try:
        document = json.dumps({text: [text]})
    except UnicodeEncodeError:  # pragma: no cover - json.dumps escapes surrogates, ascii only
        return False
    try:
        await conn.fetchval("SELECT $1::text", text)
        await conn.fetchval("SELECT $1::jsonb", document)
    except (asyncpg.PostgresError, UnicodeEncodeError):
        return False
    return True


@SETTINGS
@given(text=s.any_text)
async def test_text_is_refused_exactly_when_postgresql_cannot_store_it(pg, text: str) -> None:
    assert storable_text(text) == await _pg_stores(pg, text)
    if storable_text(text):
        assert Body(text=text, metadata={text: text}).text == text
    else:
        with pytest.raises(ValidationError) as err:
            Body(text=text)
        assert err.value.errors()[0]["type"] == "invalid_text"


@SETTINGS
@given(metadata=s.storable_metadata)
async def test_storable_metadata_is_accepted_and_stored(pg, metadata: dict) -> None:
    Body(metadata=metadata)
    stored = await pg.fetchval("SELECT $1::jsonb::text", json.dumps(metadata))
    assert json.loads(stored) == json.loads(json.dumps(metadata))


@SETTINGS
@given(metadata=s.bad_metadata)
def test_bad_metadata_is_refused(metadata: dict) -> None:
    with pytest.raises(ValidationError):  # huge numbers: by the ledger's Metadata (64-bit range)
        Body(metadata=metadata)


@SETTINGS
@given(at=s.any_instant)
def test_occurred_at_outside_the_window_is_refused(at: datetime) -> None:
    if EARLIEST <= at < LATEST:
        assert Body(occurred_at=at).occurred_at == at
    else:
        with pytest.raises(ValidationError) as err:
            Body(occurred_at=at)
        assert err.value.errors()[0]["type"] == "occurred_at_out_of_range"


@given(at=s.out_of_range_instant)
@settings(max_examples=50, deadline=None)
def test_the_window_is_2000_to_2100(at: datetime) -> None:
    assert not datetime(2000, 1, 1, tzinfo=UTC) <= at < datetime(2100, 1, 1, tzinfo=UTC)
    with pytest.raises(ValidationError):
        Body(occurred_at=at)


@given(value=st.one_of(s.non_finite_floats, st.lists(s.non_finite_floats, min_size=1)))
def test_non_finite_numbers_are_refused(value: Any) -> None:
    with pytest.raises(ValidationError) as err:
        Plain(value={"x": value})
    assert err.value.errors()[0]["type"] == "invalid_number"

"""The ledger's write routes on the fast lane (services/fastlane.py): the same service calls as
the FastAPI routes in endpoints.py, without FastAPI's per-request dependency resolution."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from pydantic import TypeAdapter
from starlette.datastructures import State
from starlette.responses import Response

from ledger_service.postings import service
from ledger_service.postings.schemas import (
    AdjustmentIn,
    BurnIn,
    CaptureIn,
    EarnIn,
    HoldIn,
    ReverseIn,
    TransferIn,
    VoidIn,
)
from services.auth import Principal
from services.fastlane import FastRoute


async def _earn(state: State, body: EarnIn, principal: Principal, key: str, _: dict[str, Any]) -> Response:
    return (await service.earn(state.engine, state.rules, body, principal, key)).response()


async def _burn(state: State, body: BurnIn, principal: Principal, key: str, _: dict[str, Any]) -> Response:
    return (await service.burn(state.engine, body, principal, key)).response()


async def _hold(state: State, body: HoldIn, principal: Principal, key: str, _: dict[str, Any]) -> Response:
    return (await service.hold(state.engine, body, principal, key)).response()


async def _capture(
    state: State, body: CaptureIn | None, principal: Principal, key: str, p: dict[str, Any]
) -> Response:
    return (await service.capture(state.engine, p["hold_id"], body or CaptureIn(), principal, key)).response()


async def _void(
    state: State, body: VoidIn | None, principal: Principal, key: str, p: dict[str, Any]
) -> Response:
    return (await service.void(state.engine, p["hold_id"], body or VoidIn(), principal, key)).response()


async def _reverse(
    state: State, body: ReverseIn, principal: Principal, key: str, p: dict[str, Any]
) -> Response:
    return (await service.reverse(state.engine, p["transaction_id"], body, principal, key)).response()


async def _transfer(
    state: State, body: TransferIn, principal: Principal, key: str, _: dict[str, Any]
) -> Response:
    return (await service.transfer(state.engine, body, principal, key)).response()


async def _adjust(
    state: State, body: AdjustmentIn, principal: Principal, key: str, _: dict[str, Any]
) -> Response:
    return (await service.adjust(state.engine, body, principal, key)).response()


_UUID = TypeAdapter(UUID)


def _uuid(value: str) -> UUID:
    """A path id as FastAPI validates it (pydantic): uuid.UUID alone also takes odd hyphens and
    prefixes. pydantic's ValidationError is a ValueError, so a bad id falls through to FastAPI."""
    return _UUID.validate_python(value)


# Paths and scopes as in endpoints.py; tests/ledger/test_fastlane.py checks they agree.
ROUTES = (
    FastRoute("/v1/earn", EarnIn, ("ledger:earn",), _earn),
    FastRoute("/v1/burn", BurnIn, ("ledger:burn",), _burn),
    FastRoute("/v1/holds", HoldIn, ("ledger:burn",), _hold),
    FastRoute("/v1/holds/{hold_id}/capture", CaptureIn, ("ledger:burn",), _capture, True, _uuid),
    FastRoute("/v1/holds/{hold_id}/void", VoidIn, ("ledger:burn",), _void, True, _uuid),
    FastRoute(
        "/v1/transactions/{transaction_id}/reverse",
        ReverseIn,
        ("ledger:earn", "ledger:burn"),
        _reverse,
        False,
        _uuid,
    ),
    FastRoute("/v1/transfers", TransferIn, ("ledger:burn",), _transfer),
    FastRoute("/v1/adjustments", AdjustmentIn, ("ledger:admin",), _adjust),
)

"""FastAPI dependencies and parameters every service's routes share: the app's database and saga runner,
a program or member named in the path or the query, and the `?limit=&cursor=` of a list (DESIGN §3)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query, Request

from services.conventions import MemberRef, ProgramCode
from services.db import Database
from services.saga import SagaRunner


async def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


DB = Annotated[Database, Depends(get_db)]


async def get_saga(request: Request) -> SagaRunner:
    saga: SagaRunner = request.app.state.saga
    return saga


# The saga runner of a service that drives sagas (the catalog's redemptions, the conversions).
Saga = Annotated[SagaRunner, Depends(get_saga)]
# A list's page size (default 50 where a route declares `limit: Limit = 50`) and its opaque cursor.
Limit = Annotated[int, Query(ge=1, le=200)]
Cursor = Annotated[str | None, Query(max_length=64)]
ProgramPath = Annotated[ProgramCode, Path()]
MemberPath = Annotated[MemberRef, Path()]
ProgramQuery = Annotated[ProgramCode | None, Query()]  # a filter: one program, or all the key may see

"""Database engine for a service: built in the app's lifespan, never at import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine


def asyncpg_dsn(url: str) -> str:
    """The same URL in asyncpg's own form (for tools that speak to the driver directly)."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


class Database:
    """One pooled engine per process. Hot paths borrow the driver connection itself."""

    def __init__(self, url: str, *, pool_size: int = 16, application_name: str = "jifen") -> None:
        self.url = url
        self.pool_size = pool_size
        self.engine: AsyncEngine = create_async_engine(
            url,
            pool_size=pool_size,
            # No overflow: an overflow connection is closed on return, so load just above the pool
            # size would open a new PostgreSQL connection per request. Requests queue instead.
            max_overflow=0,
            pool_timeout=30,
            pool_pre_ping=False,
            pool_recycle=3600,
            connect_args={"server_settings": {"application_name": application_name}},
        )

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """One database transaction: committed on success, rolled back on error."""
        async with self.engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            yield conn

    @asynccontextmanager
    async def driver(self) -> AsyncIterator[asyncpg.Connection]:
        """The pooled asyncpg connection, in autocommit: each statement is its own transaction."""
        async with self.engine.connect() as conn:
            raw: Any = await conn.get_raw_connection()
            yield raw.driver_connection

    async def ping(self) -> bool:
        async with self.driver() as conn:
            return bool(await conn.fetchval("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()

"""Runs a multi-statement SQL script through the driver's simple-query protocol.

asyncpg prepares every statement it is given with parameters; a script with many statements
(tables, PL/pgSQL functions) must go through `Connection.execute` without arguments instead.
"""

from __future__ import annotations

from typing import Any

from alembic import op
from sqlalchemy.util import await_only


def run_script(sql: str, bind: Any = None) -> None:
    """`bind`: a connection outside a migration (env.py); inside one, the migration's."""
    bind = bind if bind is not None else op.get_bind()
    driver = bind.connection.driver_connection
    await_only(driver.execute(sql))

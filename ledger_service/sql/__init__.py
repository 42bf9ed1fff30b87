"""The ledger schema's logic as source: every function and trigger of the `ledger` schema has its
current definition, and the comment that explains it, in one `.sql` file of this folder.

The files are applied after every upgrade that reaches the head revision (`migrations/env.py`), like
Flyway's repeatable migrations: versioned migrations change tables and drop what is gone, the
sources (re)define the logic. Every statement is `CREATE OR REPLACE`, so applying them twice is a
no-op; `tests/ledger/test_sql_sources.py` checks that a migrated database holds exactly these
definitions. docs/architecture.md says how to change one.
"""

from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).parent

# Bodies refer to functions of other files; with body checks off, order does not matter except
# that a trigger follows its function (same file).
_PRELUDE = "SET LOCAL check_function_bodies = off;\n"
_POSTLUDE = "\nRESET check_function_bodies;\n"


def source_files() -> list[Path]:
    return sorted(FOLDER.glob("*.sql"))


def script() -> str:
    """All sources as one script, for the simple-query protocol (several statements, no params)."""
    return _PRELUDE + "\n".join(p.read_text() for p in source_files()) + _POSTLUDE

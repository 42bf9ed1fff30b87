"""conversion schema

Revision ID: 0003_conversion
Revises: 0002_ledger
"""

from migrations.script_sql import run_script

revision = "0003_conversion"
down_revision = "0002_ledger"
branch_labels = None
depends_on = None

SCHEMA = r"""
CREATE SCHEMA conversion;
"""


def upgrade() -> None:
    run_script(SCHEMA)


def downgrade() -> None:
    run_script("DROP SCHEMA conversion CASCADE")

"""catalog schema

Revision ID: 0004_catalog
Revises: 0003_conversion
"""

from migrations.script_sql import run_script

revision = "0004_catalog"
down_revision = "0003_conversion"
branch_labels = None
depends_on = None

SCHEMA = r"""
CREATE SCHEMA catalog;
"""


def upgrade() -> None:
    run_script(SCHEMA)


def downgrade() -> None:
    run_script("DROP SCHEMA catalog CASCADE")

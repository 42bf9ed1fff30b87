"""auth schema: API keys shared by every service

Revision ID: 0001_auth
Revises:
"""

from alembic import op

revision = "0001_auth"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS auth")
    op.execute(
        """
        CREATE TABLE auth.api_keys (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            name text NOT NULL,
            prefix text NOT NULL,
            key_hash bytea NOT NULL UNIQUE,
            scopes text[] NOT NULL,
            programs text[],
            created_at timestamptz NOT NULL DEFAULT now(),
            revoked_at timestamptz
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP SCHEMA auth CASCADE")

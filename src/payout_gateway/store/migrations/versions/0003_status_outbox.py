"""Status outbox: moves committed and not yet in the replicas' fan-out (tables.py)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "status_outbox",
        sa.Column("sequence", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("committed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["sequence"],
            ["status_changes.id"],
            name=op.f("fk_status_outbox_sequence_status_changes"),
        ),
        sa.PrimaryKeyConstraint("sequence", name=op.f("pk_status_outbox")),
    )


def downgrade() -> None:
    op.drop_table("status_outbox")

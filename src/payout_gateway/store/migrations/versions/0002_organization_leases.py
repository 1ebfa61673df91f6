"""Organization leases: one caller at a time for a step of an organization (tables.py)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "organization_leases",
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("purpose", sa.String(length=60), nullable=False),
        sa.Column("holder", sa.String(length=40), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_organization_leases_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("organization_id", "purpose", name=op.f("pk_organization_leases")),
    )


def downgrade() -> None:
    op.drop_table("organization_leases")

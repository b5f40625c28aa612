"""voice notes: a three-way voice preference, what the outbox needs to finish a voice reply
after a crash, and hosted media for platforms that fetch audio by URL

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"  # the head on this branch after merging main (0004, 0001 before)
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("learners", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("voice_mode", sa.String(length=4), server_default="auto", nullable=False)
        )
    # /voice on was the only way to set the old flag; "off" was also its default, so it maps
    # to the new default (voice notes answered with voice, text with text).
    op.execute(
        sa.text("UPDATE learners SET voice_mode = 'on' WHERE voice_replies = :on").bindparams(
            on=True
        )
    )
    with op.batch_alter_table("learners", schema=None) as batch_op:
        batch_op.drop_column("voice_replies")

    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("audio", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("audio_mime", sa.String(length=60), nullable=True))
        batch_op.add_column(sa.Column("duration_s", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("media_ref", sa.String(length=1000), nullable=True))
        batch_op.add_column(sa.Column("media_ref_until", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("meta", sa.JSON(), nullable=True))

    op.create_table(
        "hosted_media",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("mime", sa.String(length=60), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("hosted_media", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_hosted_media_expires_at"), ["expires_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("hosted_media", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hosted_media_expires_at"))
    op.drop_table("hosted_media")

    with op.batch_alter_table("outbox", schema=None) as batch_op:
        for column in ("meta", "media_ref_until", "media_ref", "duration_s", "audio_mime", "audio"):
            batch_op.drop_column(column)

    with op.batch_alter_table("learners", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("voice_replies", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    op.execute(sa.text("UPDATE learners SET voice_replies = (voice_mode = 'on')"))
    with op.batch_alter_table("learners", schema=None) as batch_op:
        batch_op.drop_column("voice_mode")

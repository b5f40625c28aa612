"""calls: one row per phone call (Telnyx, Vonage)

Revision ID: 0004
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0001"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("provider_call_id", sa.String(length=200), nullable=False),
        sa.Column("provider_session_id", sa.String(length=200), nullable=True),
        sa.Column("learner_id", _ID, nullable=True),
        sa.Column("from_e164", sa.String(length=20), nullable=True),
        sa.Column("to_e164", sa.String(length=20), nullable=True),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("answered_at", sa.Float(), nullable=True),
        sa.Column("stream_nonce", sa.String(length=64), nullable=True),
        sa.Column("stream_claimed_at", sa.Float(), nullable=True),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("hangup_cause", sa.String(length=40), nullable=True),
        sa.Column("hangup_source", sa.String(length=20), nullable=True),
        sa.Column("end_reason", sa.String(length=40), nullable=True),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("audio_in_seconds", sa.Float(), nullable=False),
        sa.Column("audio_out_seconds", sa.Float(), nullable=False),
        sa.Column("usage", sa.JSON(), nullable=True),
        sa.Column("memory_saved_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["learner_id"], ["learners.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("provider", "provider_call_id", name="uq_call_provider"),
    )
    op.create_index(op.f("ix_calls_learner_id"), "calls", ["learner_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_calls_learner_id"), table_name="calls")
    op.drop_table("calls")

"""channel traffic: reactions, deletions, photo sets, the buddy's message ids

Revision ID: 0002
Revises: 0004 (was 0001; main had gained 0004_calls)
Create Date: 2026-12-02 12:00:00

- ``turns.reaction`` / ``reaction_at``: the learner's reaction to one of the buddy's turns;
  ``turns.redacted_at``: the learner deleted this message (its text is gone).
- ``inbox.message_id``: the learner's message an item is about, to find every stored copy of a
  deleted message; ``inbox.merged_into``: the item that answered this one with it (a photo set).
- ``sent_messages``: every platform message id of the buddy's turns (a reply may be several).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0004"  # the head on main when merged (0001 before); the lead re-chains
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("turns", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reaction", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("reaction_at", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("redacted_at", sa.Float(), nullable=True))

    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("message_id", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("merged_into", BigId, nullable=True))
        batch_op.create_index("ix_inbox_message", ["channel", "message_id"], unique=False)

    op.create_table(
        "sent_messages",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("chat_id", sa.String(length=200), nullable=False),
        sa.Column("provider_message_id", sa.String(length=200), nullable=False),
        sa.Column("turn_id", BigId, nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["turn_id"], ["turns.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("channel", "chat_id", "provider_message_id", name="uq_sent_message"),
    )
    with op.batch_alter_table("sent_messages", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sent_messages_turn_id"), ["turn_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sent_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sent_messages_turn_id"))
    op.drop_table("sent_messages")

    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.drop_index("ix_inbox_message")
        batch_op.drop_column("merged_into")
        batch_op.drop_column("message_id")

    with op.batch_alter_table("turns", schema=None) as batch_op:
        batch_op.drop_column("redacted_at")
        batch_op.drop_column("reaction_at")
        batch_op.drop_column("reaction")

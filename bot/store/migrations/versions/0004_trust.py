"""verifications in the store, guessing counters, durable channel messages, login attempts

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 14:40:00
"""

from alembic import op
import sqlalchemy as sa


revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('verifications',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('conversation_id', sa.String(length=255), nullable=False),
    sa.Column('order_number', sa.String(length=40), nullable=False),
    sa.Column('verified_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_verifications')),
    sa.UniqueConstraint('conversation_id', 'order_number', name=op.f('uq_verifications_conversation_id_order_number'))
    )
    op.create_table('login_attempts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=300), nullable=False),
    sa.Column('succeeded', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_login_attempts'))
    )
    with op.batch_alter_table('login_attempts', schema=None) as batch_op:
        batch_op.create_index('ix_login_attempts_key_time', ['key', 'created_at'], unique=False)

    with op.batch_alter_table('verification_attempts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('proof_kind', sa.String(length=10), nullable=True))
        batch_op.add_column(sa.Column('proof_key', sa.String(length=64), nullable=True))
        batch_op.create_index('ix_verification_attempts_proof_time', ['proof_key', 'created_at'], unique=False)

    with op.batch_alter_table('channel_deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('payload', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('handled_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True))
    # Ids delivered before this revision were handled then (the old code ran each turn at once).
    op.execute("UPDATE channel_deliveries SET handled_at = received_at")


def downgrade() -> None:
    with op.batch_alter_table('channel_deliveries', schema=None) as batch_op:
        batch_op.drop_column('claimed_at')
        batch_op.drop_column('handled_at')
        batch_op.drop_column('payload')

    with op.batch_alter_table('verification_attempts', schema=None) as batch_op:
        batch_op.drop_index('ix_verification_attempts_proof_time')
        batch_op.drop_column('proof_key')
        batch_op.drop_column('proof_kind')

    with op.batch_alter_table('login_attempts', schema=None) as batch_op:
        batch_op.drop_index('ix_login_attempts_key_time')

    op.drop_table('login_attempts')
    op.drop_table('verifications')

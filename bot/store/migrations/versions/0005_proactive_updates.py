"""proactive updates: the live feed's receipts, consent to updates, the outbox, the feed's delivery window

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 23:21:41
"""

from alembic import op
import sqlalchemy as sa


revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('feed_receipts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.Column('event_id', sa.String(length=120), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('tracking_number', sa.String(length=64), nullable=False),
    sa.Column('carrier', sa.String(length=40), nullable=True),
    sa.Column('tag', sa.String(length=40), nullable=False),
    sa.Column('known', sa.Boolean(), nullable=False),
    sa.Column('events_stored', sa.Integer(), nullable=False),
    sa.CheckConstraint("source IN ('aftership', 'own')", name=op.f('ck_feed_receipts_source_known')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_feed_receipts')),
    sa.UniqueConstraint('source', 'event_id', name=op.f('uq_feed_receipts_source_event_id'))
    )
    with op.batch_alter_table('feed_receipts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_feed_receipts_received_at'), ['received_at'], unique=False)
        batch_op.create_index('ix_feed_receipts_tracking', ['tracking_number'], unique=False)

    op.create_table('update_subscriptions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('conversation_id', sa.String(length=255), nullable=False),
    sa.Column('channel', sa.String(length=40), nullable=False),
    sa.Column('order_number', sa.String(length=40), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_update_subscriptions')),
    sa.UniqueConstraint('conversation_id', 'order_number', name=op.f('uq_update_subscriptions_conversation_id_order_number'))
    )
    with op.batch_alter_table('update_subscriptions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_update_subscriptions_order_number'), ['order_number'], unique=False)

    op.create_table('notifications',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('subscription_id', sa.Integer(), nullable=False),
    sa.Column('conversation_id', sa.String(length=255), nullable=False),
    sa.Column('channel', sa.String(length=40), nullable=False),
    sa.Column('order_number', sa.String(length=40), nullable=False),
    sa.Column('shipment_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=30), nullable=False),
    sa.Column('change_key', sa.String(length=120), nullable=False),
    sa.Column('facts', sa.JSON(), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('outcome', sa.String(length=300), nullable=False),
    sa.Column('messages', sa.JSON(), nullable=False),
    sa.Column('seen_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("kind IN ('exception', 'late_estimate', 'failed_attempt', 'pickup', 'out_for_delivery', 'lost', 'stalled', 'delivered')", name=op.f('ck_notifications_kind_known')),
    sa.CheckConstraint("state IN ('queued', 'sent', 'not_sent', 'skipped', 'failed')", name=op.f('ck_notifications_state_known')),
    sa.ForeignKeyConstraint(['shipment_id'], ['shipments.id'], name=op.f('fk_notifications_shipment_id_shipments'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['subscription_id'], ['update_subscriptions.id'], name=op.f('fk_notifications_subscription_id_update_subscriptions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notifications')),
    sa.UniqueConstraint('conversation_id', 'shipment_id', 'change_key', name=op.f('uq_notifications_conversation_id_shipment_id_change_key'))
    )
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.create_index('ix_notifications_conversation', ['conversation_id'], unique=False)
        batch_op.create_index('ix_notifications_due', ['state', 'due_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_notifications_subscription_id'), ['subscription_id'], unique=False)

    with op.batch_alter_table('shipments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('eta_earliest', sa.Date(), nullable=True))
        batch_op.add_column(sa.Column('eta_latest', sa.Date(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('shipments', schema=None) as batch_op:
        batch_op.drop_column('eta_latest')
        batch_op.drop_column('eta_earliest')

    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_notifications_subscription_id'))
        batch_op.drop_index('ix_notifications_due')
        batch_op.drop_index('ix_notifications_conversation')

    op.drop_table('notifications')
    with op.batch_alter_table('update_subscriptions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_update_subscriptions_order_number'))

    op.drop_table('update_subscriptions')
    with op.batch_alter_table('feed_receipts', schema=None) as batch_op:
        batch_op.drop_index('ix_feed_receipts_tracking')
        batch_op.drop_index(batch_op.f('ix_feed_receipts_received_at'))

    op.drop_table('feed_receipts')

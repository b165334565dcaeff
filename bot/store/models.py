"""The order and carrier store: SQLAlchemy models (2.0-style declarations).

The schema carries the rules that must never be broken, whatever code writes
to it: unique order numbers and tracking numbers, a carrier event stored once
however often the carrier delivers it, one resolution per shipment and reason.
Migrations in `bot/migrations/` create it; nothing calls `create_all`.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any, List, Optional

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import declarative_base, relationship
from sqlalchemy.sql.schema import Column
from sqlalchemy.types import TypeDecorator

from bot.domain.carriers import CANONICAL_STATUSES, REASONS
from bot.domain.clock import utcnow
from bot.domain.enums import (
    AddressChangeState,
    AddressMode,
    ClaimReason,
    FeedSource,
    HandoffState,
    NoticeKind,
    NoticeState,
    OrderSource,
    ResolutionKind,
    Status,
)

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Base: Any = declarative_base(metadata=MetaData(naming_convention=NAMING))

MONEY = Numeric(12, 2)


class UTCDateTime(TypeDecorator):
    """An aware UTC timestamp on every backend.

    SQLite has no time zones: values are stored as naive UTC and come back
    aware, so comparisons never mix naive and aware datetimes.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Optional[dt.datetime], dialect: Any) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        value = value.astimezone(dt.timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Optional[dt.datetime], dialect: Any) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)




def _in(column: str, values: Any) -> str:
    quoted = ", ".join(f"'{value}'" for value in values)
    return f"{column} IN ({quoted})"


STATUS_CHECK = _in("status", CANONICAL_STATUSES)


class Customer(Base):
    __tablename__ = "customers"

    id = Column(Integer, primary_key=True)
    email = Column(String(254), nullable=False, unique=True)
    name = Column(String(200), nullable=False, default="")
    phone = Column(String(40))
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)

    orders: List[Order] = relationship("Order", back_populates="customer")

    __table_args__ = (CheckConstraint("email = lower(email)", name="email_lowercase"),)


class Order(Base):
    __tablename__ = "orders"

    id = Column(Integer, primary_key=True)
    number = Column(String(40), nullable=False, unique=True)
    customer_id = Column(ForeignKey("customers.id", ondelete="RESTRICT"), nullable=False, index=True)
    placed_at = Column(UTCDateTime, nullable=False)
    promised_date = Column(Date)
    ship_name = Column(String(200), nullable=False)
    ship_line1 = Column(String(200), nullable=False)
    ship_line2 = Column(String(200), nullable=False, default="")
    ship_city = Column(String(120), nullable=False)
    ship_postcode = Column(String(20), nullable=False)
    ship_region = Column(String(120), nullable=False, default="")
    ship_country = Column(String(2), nullable=False)
    value = Column(MONEY, nullable=False)
    currency = Column(String(3), nullable=False)
    source = Column(String(20), nullable=False, default=OrderSource.IMPORT.value)
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)
    updated_at = Column(UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow)

    customer: Customer = relationship("Customer", back_populates="orders")
    items: List[OrderItem] = relationship(
        "OrderItem", back_populates="order", cascade="all, delete-orphan", order_by="OrderItem.id"
    )
    shipments: List[Shipment] = relationship(
        "Shipment", back_populates="order", cascade="all, delete-orphan", order_by="Shipment.id"
    )

    __table_args__ = (
        CheckConstraint("value >= 0", name="value_not_negative"),
        CheckConstraint(_in("source", OrderSource.values()), name="source_known"),
    )


class OrderItem(Base):
    __tablename__ = "order_items"

    id = Column(Integer, primary_key=True)
    order_id = Column(ForeignKey("orders.id", ondelete="CASCADE"), nullable=False, index=True)
    sku = Column(String(64), nullable=False)
    name = Column(String(200), nullable=False)
    quantity = Column(Integer, nullable=False)
    unit_price = Column(MONEY, nullable=False)

    order: Order = relationship("Order", back_populates="items")

    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("unit_price >= 0", name="unit_price_not_negative"),
        UniqueConstraint("order_id", "sku"),
    )


class Carrier(Base):
    __tablename__ = "carriers"

    id = Column(Integer, primary_key=True)
    code = Column(String(40), nullable=False, unique=True)
    name = Column(String(120), nullable=False)
    tracking_url_template = Column(String(500), nullable=False)
    supports_redirect = Column(Boolean, nullable=False, default=False)

    status_codes: List[CarrierStatusCode] = relationship(
        "CarrierStatusCode", back_populates="carrier", cascade="all, delete-orphan"
    )

    __table_args__ = (
        CheckConstraint("tracking_url_template LIKE '%{tracking_number}%'", name="url_has_number"),
    )


class CarrierStatusCode(Base):
    """The mapping from one carrier's raw code to the canonical status."""

    __tablename__ = "carrier_status_codes"

    id = Column(Integer, primary_key=True)
    carrier_id = Column(ForeignKey("carriers.id", ondelete="CASCADE"), nullable=False)
    raw_code = Column(String(40), nullable=False)
    status = Column(String(30), nullable=False)
    reason = Column(String(30))
    description = Column(String(300), nullable=False, default="")

    carrier: Carrier = relationship("Carrier", back_populates="status_codes")

    __table_args__ = (
        UniqueConstraint("carrier_id", "raw_code"),
        CheckConstraint(STATUS_CHECK, name="status_canonical"),
        CheckConstraint(f"reason IS NULL OR {_in('reason', REASONS)}", name="reason_known"),
    )


class Shipment(Base):
    __tablename__ = "shipments"

    id = Column(Integer, primary_key=True)
    order_id = Column(ForeignKey("orders.id", ondelete="CASCADE"), nullable=False, index=True)
    carrier_id = Column(ForeignKey("carriers.id", ondelete="RESTRICT"), nullable=False)
    tracking_number = Column(String(64), nullable=False)
    status = Column(String(30), nullable=False, default=Status.PENDING.value)
    shipped_at = Column(UTCDateTime)
    estimated_delivery = Column(Date)
    #: The live feed's own window for the delivery day (AfterShip's min and max), when it gives one.
    eta_earliest = Column(Date)
    eta_latest = Column(Date)
    last_event_at = Column(UTCDateTime)
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)
    updated_at = Column(UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow)

    order: Order = relationship("Order", back_populates="shipments")
    carrier: Carrier = relationship("Carrier")
    events: List[TrackingEvent] = relationship(
        "TrackingEvent",
        back_populates="shipment",
        cascade="all, delete-orphan",
        order_by="[TrackingEvent.occurred_at, TrackingEvent.id]",
    )

    __table_args__ = (
        UniqueConstraint("carrier_id", "tracking_number"),
        CheckConstraint(STATUS_CHECK, name="status_canonical"),
    )


class TrackingEvent(Base):
    """One scan as the carrier reported it, kept verbatim beside its meaning."""

    __tablename__ = "tracking_events"

    id = Column(Integer, primary_key=True)
    shipment_id = Column(ForeignKey("shipments.id", ondelete="CASCADE"), nullable=False)
    event_key = Column(String(64), nullable=False)
    occurred_at = Column(UTCDateTime, nullable=False)
    raw_code = Column(String(40), nullable=False)
    raw_text = Column(String(500), nullable=False, default="")
    location = Column(String(200), nullable=False, default="")
    status = Column(String(30))
    reason = Column(String(30))
    estimated_delivery = Column(Date)
    received_at = Column(UTCDateTime, nullable=False, default=utcnow)

    shipment: Shipment = relationship("Shipment", back_populates="events")

    __table_args__ = (
        UniqueConstraint("shipment_id", "event_key"),
        Index("ix_tracking_events_shipment_time", "shipment_id", "occurred_at"),
        CheckConstraint(f"status IS NULL OR {STATUS_CHECK}", name="status_canonical"),
    )


class AddressChangeRequest(Base):
    __tablename__ = "address_change_requests"

    id = Column(Integer, primary_key=True)
    order_id = Column(ForeignKey("orders.id", ondelete="CASCADE"), nullable=False, index=True)
    shipment_id = Column(ForeignKey("shipments.id", ondelete="CASCADE"))
    kind = Column(String(20), nullable=False)
    state = Column(String(20), nullable=False)
    old_address = Column(JSON, nullable=False)
    new_address = Column(JSON, nullable=False)
    conversation_id = Column(String(255))
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)

    __table_args__ = (
        CheckConstraint(_in("kind", (AddressMode.DIRECT, AddressMode.REDIRECT)), name="kind_known"),
        CheckConstraint(_in("state", AddressChangeState.values()), name="state_known"),
    )


class Resolution(Base):
    """A refund, reship or credit granted for one problem with one shipment."""

    __tablename__ = "resolutions"

    id = Column(Integer, primary_key=True)
    order_id = Column(ForeignKey("orders.id", ondelete="CASCADE"), nullable=False, index=True)
    shipment_id = Column(ForeignKey("shipments.id", ondelete="CASCADE"), nullable=False)
    reason = Column(String(20), nullable=False)
    kind = Column(String(20), nullable=False)
    amount = Column(MONEY, nullable=False, default=Decimal("0"))
    currency = Column(String(3), nullable=False)
    conversation_id = Column(String(255))
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)

    __table_args__ = (
        UniqueConstraint("shipment_id", "reason"),
        CheckConstraint(_in("reason", ClaimReason.values()), name="reason_known"),
        CheckConstraint(_in("kind", ResolutionKind.values()), name="kind_known"),
        CheckConstraint("amount >= 0", name="amount_not_negative"),
    )


class Agent(Base):
    __tablename__ = "agents"

    id = Column(Integer, primary_key=True)
    username = Column(String(80), nullable=False, unique=True)
    display_name = Column(String(120), nullable=False)
    password_hash = Column(String(255), nullable=False)
    active = Column(Boolean, nullable=False, default=True)
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)
    #: The console's last authenticated request: an agent seen lately is "online".
    last_seen_at = Column(UTCDateTime)


class AgentSession(Base):
    """A logged-in console: only a hash of the cookie's token is kept."""

    __tablename__ = "agent_sessions"

    id = Column(Integer, primary_key=True)
    agent_id = Column(ForeignKey("agents.id", ondelete="CASCADE"), nullable=False, index=True)
    token_hash = Column(String(64), nullable=False, unique=True)
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)
    expires_at = Column(UTCDateTime, nullable=False, index=True)


class Handoff(Base):
    __tablename__ = "handoffs"

    id = Column(Integer, primary_key=True)
    conversation_id = Column(String(255), nullable=False, index=True)
    channel = Column(String(40), nullable=False)
    order_id = Column(ForeignKey("orders.id", ondelete="SET NULL"))
    customer_id = Column(ForeignKey("customers.id", ondelete="SET NULL"))
    reason = Column(String(40), nullable=False)
    summary = Column(Text, nullable=False, default="")
    context = Column(JSON, nullable=False, default=dict)
    transcript = Column(JSON, nullable=False, default=list)
    state = Column(String(20), nullable=False, default=HandoffState.QUEUED.value)
    agent_id = Column(ForeignKey("agents.id", ondelete="SET NULL"))
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)
    claimed_at = Column(UTCDateTime)
    closed_at = Column(UTCDateTime)
    #: The external helpdesk copy: None (none configured), "pending", "sent" or "failed".
    helpdesk_status = Column(String(20))

    __table_args__ = (
        CheckConstraint(
            _in("state", HandoffState.values()), name="state_known"
        ),
    )


class VerificationAttempt(Base):
    """One try at proving who is asking about an order, kept for lock-outs."""

    __tablename__ = "verification_attempts"

    id = Column(Integer, primary_key=True)
    conversation_id = Column(String(255), nullable=False)
    order_number = Column(String(40), nullable=False)
    succeeded = Column(Boolean, nullable=False)
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)
    #: "email" or "postcode": which proof was tried.
    proof_kind = Column(String(10))
    #: SHA-256 of the normalised proof tried (the email, or the postcode without spaces), so guessing
    #: with one address or one postcode is counted shop-wide without keeping the proof itself.
    proof_key = Column(String(64))

    __table_args__ = (
        Index("ix_verification_attempts_order_time", "order_number", "created_at"),
        Index("ix_verification_attempts_conversation", "conversation_id"),
        Index("ix_verification_attempts_proof_time", "proof_key", "created_at"),
    )


class Verification(Base):
    """A conversation proved it may talk about an order.

    The only proof actions accept: a slot can be forged by whoever can write to a
    tracker, this row only by the verification check.  It lapses after
    VERIFICATION_TTL_MINUTES without use and is removed when the conversation
    starts a new session.
    """

    __tablename__ = "verifications"

    id = Column(Integer, primary_key=True)
    conversation_id = Column(String(255), nullable=False)
    order_number = Column(String(40), nullable=False)
    verified_at = Column(UTCDateTime, nullable=False, default=utcnow)
    last_used_at = Column(UTCDateTime, nullable=False, default=utcnow)

    __table_args__ = (UniqueConstraint("conversation_id", "order_number"),)


class LoginAttempt(Base):
    """A console login attempt, counted per username and per client address for the limit.

    Rows are written before the password is checked and kept only for the
    window the limit looks at.
    """

    __tablename__ = "login_attempts"

    id = Column(Integer, primary_key=True)
    #: "user:<username>" or "addr:<client address>".
    key = Column(String(300), nullable=False)
    succeeded = Column(Boolean, nullable=False, default=False)
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)

    __table_args__ = (Index("ix_login_attempts_key_time", "key", "created_at"),)


class AuditLog(Base):
    __tablename__ = "audit_log"

    id = Column(Integer, primary_key=True)
    at = Column(UTCDateTime, nullable=False, default=utcnow)
    actor = Column(String(80), nullable=False)
    action = Column(String(80), nullable=False)
    entity = Column(String(40), nullable=False)
    entity_id = Column(String(64), nullable=False)
    details = Column(JSON, nullable=False, default=dict)

    __table_args__ = (Index("ix_audit_log_entity", "entity", "entity_id"),)


class StoreMeta(Base):
    """Small facts about the store itself, such as the day the demo data was seeded for."""

    __tablename__ = "store_meta"

    key = Column(String(80), primary_key=True)
    value = Column(String(500), nullable=False)


class ChannelDelivery(Base):
    """A message id a channel has already handed to the assistant.

    Meta re-delivers webhooks it thinks were missed, to any replica and for
    days; the unique key makes the first delivery the only one processed.
    """

    __tablename__ = "channel_deliveries"

    id = Column(Integer, primary_key=True)
    channel = Column(String(40), nullable=False)
    message_id = Column(String(255), nullable=False)
    received_at = Column(UTCDateTime, nullable=False, default=utcnow, index=True)
    #: What is needed to run the turn again after a restart (sender, text, metadata).
    payload = Column(JSON)
    #: Set once the turn ran; a message accepted but never handled is run at the next start.
    handled_at = Column(UTCDateTime)
    #: When a process last took the message to run it (a lease, so one replica runs it).
    claimed_at = Column(UTCDateTime)

    __table_args__ = (UniqueConstraint("channel", "message_id"),)


class FeedReceipt(Base):
    """One webhook call of a live tracking feed, recorded once by its event id.

    A repeated event id is answered 200 and changes nothing.  A tracking number
    the store does not know is recorded here too (and answered 200, so the feed
    does not retry it for days); only the number, the carrier and the status are
    kept, never the shopper's details a feed may carry.
    """

    __tablename__ = "feed_receipts"

    id = Column(Integer, primary_key=True)
    source = Column(String(20), nullable=False)
    event_id = Column(String(120), nullable=False)
    received_at = Column(UTCDateTime, nullable=False, default=utcnow, index=True)
    tracking_number = Column(String(64), nullable=False, default="")
    carrier = Column(String(40))
    tag = Column(String(40), nullable=False, default="")
    #: Whether the tracking number matched a shipment in the store.
    known = Column(Boolean, nullable=False)
    events_stored = Column(Integer, nullable=False, default=0)

    __table_args__ = (
        UniqueConstraint("source", "event_id"),
        CheckConstraint(_in("source", FeedSource.values()), name="source_known"),
        Index("ix_feed_receipts_tracking", "tracking_number"),
    )


class UpdateSubscription(Base):
    """A shopper's consent to proactive updates about one order, on one conversation and channel."""

    __tablename__ = "update_subscriptions"

    id = Column(Integer, primary_key=True)
    conversation_id = Column(String(255), nullable=False)
    channel = Column(String(40), nullable=False)
    order_number = Column(String(40), nullable=False, index=True)
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)
    #: Set when the shopper stops the updates; a new consent clears it.
    ended_at = Column(UTCDateTime)

    __table_args__ = (UniqueConstraint("conversation_id", "order_number"),)


class Notification(Base):
    """A proactive update in the outbox: one per conversation, parcel and change.

    The unique key makes a change told once however often the feed repeats it;
    the claim (``claimed_at``) lets one process of many send it, and a process
    that dies leaves it to the next after the lease.
    """

    __tablename__ = "notifications"

    id = Column(Integer, primary_key=True)
    subscription_id = Column(ForeignKey("update_subscriptions.id", ondelete="CASCADE"), nullable=False, index=True)
    conversation_id = Column(String(255), nullable=False)
    channel = Column(String(40), nullable=False)
    order_number = Column(String(40), nullable=False)
    shipment_id = Column(ForeignKey("shipments.id", ondelete="CASCADE"), nullable=False)
    kind = Column(String(30), nullable=False)
    change_key = Column(String(120), nullable=False)
    facts = Column(JSON, nullable=False, default=dict)
    state = Column(String(20), nullable=False, default=NoticeState.QUEUED.value)
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)
    #: Not before this (quiet hours move it to the morning).
    due_at = Column(UTCDateTime, nullable=False)
    claimed_at = Column(UTCDateTime)
    attempts = Column(Integer, nullable=False, default=0)
    sent_at = Column(UTCDateTime)
    #: Why it was not sent, skipped or failed; or how it went out ("template").
    outcome = Column(String(300), nullable=False, default="")
    #: What the shopper was sent, for a widget that was closed when it went out.
    messages = Column(JSON, nullable=False, default=list)
    #: When an open widget confirmed it showed the update (widget only).
    seen_at = Column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("conversation_id", "shipment_id", "change_key"),
        Index("ix_notifications_due", "state", "due_at"),
        Index("ix_notifications_conversation", "conversation_id"),
        CheckConstraint(_in("kind", NoticeKind.values()), name="kind_known"),
        CheckConstraint(_in("state", NoticeState.values()), name="state_known"),
    )

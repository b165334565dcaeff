"""Every state, reason and outcome the assistant knows, defined once.

Each is a `str` enumeration: its members compare equal to the plain strings
stored in the database and in Rasa slots, and serialise to them, so the store's
columns and the conversation's slots keep plain text while the code names them.
"""

from __future__ import annotations

from enum import Enum
from typing import Tuple, Type, TypeVar

E = TypeVar("E", bound="StrEnum")


class StrEnum(str, Enum):
    """A string enumeration whose `str()` is its value (as Python 3.11's `enum.StrEnum`)."""

    def __str__(self) -> str:
        return str(self.value)

    @classmethod
    def values(cls: Type[E]) -> Tuple[str, ...]:
        """The members' values, in definition order."""
        return tuple(member.value for member in cls)


class Status(StrEnum):
    """The industry's usual shipment states, in the order a parcel normally goes through them."""

    PENDING = "pending"
    INFO_RECEIVED = "info_received"
    IN_TRANSIT = "in_transit"
    OUT_FOR_DELIVERY = "out_for_delivery"
    FAILED_ATTEMPT = "failed_attempt"
    AVAILABLE_FOR_PICKUP = "available_for_pickup"
    DELIVERED = "delivered"
    EXCEPTION = "exception"
    LOST = "lost"
    RETURNED_TO_SENDER = "returned_to_sender"


class DelayReason(StrEnum):
    """Why a parcel is late or stuck, as far as the carrier tells."""

    WEATHER = "weather"
    CUSTOMS = "customs"
    ADDRESS_PROBLEM = "address_problem"
    DAMAGED = "damaged"
    RECIPIENT_UNAVAILABLE = "recipient_unavailable"
    CAPACITY = "capacity"
    CARRIER_LOST = "lost"


class Job(StrEnum):
    """What the shopper came for, once the order is verified (the `pending_job` slot)."""

    STATUS = "status"
    DELAY = "delay"
    ADDRESS = "address"
    CLAIM = "claim"
    QUESTION = "question"  # follow-up questions (bot.domain.questions), else the status


class ClaimReason(StrEnum):
    """Why a shopper asks for a refund or a replacement."""

    LOST = "lost"
    DAMAGED = "damaged"
    LATE = "late"
    NOT_RECEIVED = "not_received"


class ClaimOutcome(StrEnum):
    """What the policy says about a claim."""

    ELIGIBLE = "eligible"  # the bot settles it: refund or replacement
    NOT_YET = "not_yet"  # not (yet) covered, e.g. only a few days late
    HUMAN = "human"  # a person decides (high value, repeat claim)
    ALREADY = "already"  # settled before; never paid twice


class ResolutionKind(StrEnum):
    REFUND = "refund"
    RESHIP = "reship"
    CREDIT = "credit"


class AddressMode(StrEnum):
    """How a new delivery address can be applied at the order's stage."""

    DIRECT = "direct"  # nothing shipped yet: the order is changed
    REDIRECT = "redirect"  # the carrier is asked to redirect the parcel
    IMPOSSIBLE = "impossible"  # too late, or the carrier cannot redirect


class AddressChangeState(StrEnum):
    APPLIED = "applied"
    REQUESTED = "requested"
    REFUSED = "refused"


class VerifyResult(StrEnum):
    VERIFIED = "verified"
    MISMATCH = "mismatch"  # the same answer whether or not the order exists
    LOCKED = "locked"  # this conversation failed too often: no more attempts, a person is offered
    EMAIL_PAUSED = "email_paused"  # this email failed too often shop-wide: it proves nothing for an hour
    POSTCODE_PAUSED = "postcode_paused"  # this order number failed too often: only its email counts for an hour


class HandoffState(StrEnum):
    """A hand-off's life in the agents' queue."""

    QUEUED = "queued"  # waiting for an agent
    CLAIMED = "claimed"  # an agent holds the conversation; the bot is silent
    RESOLVED = "resolved"  # the agent closed it
    RETURNED = "returned"  # the agent handed it back to the bot


#: Hand-offs still waiting for, or held by, a person.
OPEN_HANDOFF_STATES = (HandoffState.QUEUED, HandoffState.CLAIMED)


class HandoffReason(StrEnum):
    """Why a conversation went to a person (the `handoff_reason` slot and the handoff record)."""

    ASKED = "asked"
    NOT_UNDERSTOOD = "not_understood"
    HIGH_VALUE = "high_value"
    REPEAT_CLAIM = "repeat_claim"
    LOCKED_OUT = "locked_out"
    ADDRESS_IMPOSSIBLE = "address_impossible"
    DELIVERY_PROBLEM = "delivery_problem"  # a stalled or held parcel, or an order late leaving the warehouse
    RETURN = "return"  # cancel an order, or send it back
    RESOLUTION_CHANGE = "resolution_change"  # a booked refund or replacement already carried out
    PHOTO_NEEDED = "photo_needed"  # damage the shopper reports on a delivered parcel
    ERROR = "error"


class OrderSource(StrEnum):
    DEMO = "demo"
    IMPORT = "import"


class NoticeKind(StrEnum):
    """A change in a parcel's journey worth telling a subscribed shopper about (proactive updates)."""

    EXCEPTION = "exception"  # the carrier reports a problem
    LATE_ESTIMATE = "late_estimate"  # a new estimate after the promised date
    FAILED_ATTEMPT = "failed_attempt"
    PICKUP = "pickup"  # waiting at a pickup point
    OUT_FOR_DELIVERY = "out_for_delivery"
    LOST = "lost"  # lost, or presumed lost after a long silence
    STALLED = "stalled"  # no scan for POLICY_STALLED_BUSINESS_DAYS (found by the sweep)
    DELIVERED = "delivered"  # only with NOTIFY_DELIVERED


class NoticeState(StrEnum):
    """Where one proactive update is in the outbox."""

    QUEUED = "queued"  # waiting to be sent (at due_at; quiet hours move due_at to the morning)
    SENT = "sent"  # in the conversation and handed to the channel
    NOT_SENT = "not_sent"  # the channel cannot take it (outside the 24-hour window with no template)
    SKIPPED = "skipped"  # overtaken by a newer update, the daily cap, or the shopper stopped updates
    FAILED = "failed"  # the channel refused it after the retries


class FeedSource(StrEnum):
    """Where a live tracking update came from."""

    AFTERSHIP = "aftership"
    OWN = "own"  # the project's own event format (`python -m bot import events`)

"""Refund or reship: who is eligible, and recording the outcome exactly once."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import List, Optional

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.answers import Parcel, day, parcels
from bot.carriers import DAMAGED, DELIVERED, EXCEPTION
from bot.config import Settings
from bot.models import Order, Resolution
from bot.store import audit

CLAIM_REASONS = ("lost", "damaged", "late", "not_received")

ELIGIBLE = "eligible"
NOT_YET = "not_yet"
HUMAN = "human"
ALREADY = "already"


@dataclass(frozen=True)
class Decision:
    outcome: str
    reason: str
    message: str
    parcel: Optional[Parcel] = None
    human_reason: Optional[str] = None
    existing: Optional[Resolution] = None


def _fits(parcel: Parcel, reason: str, settings: Settings, today: dt.date) -> bool:
    state = parcel.state
    policy = settings.policy
    if reason == "lost":
        return state.presumed_lost
    if reason == "damaged":
        return state.status == DELIVERED or (state.status == EXCEPTION and state.delay_reason == DAMAGED)
    if reason == "late":
        return state.presumed_lost or (state.is_late and state.days_late >= policy.late_claim_days)
    if reason == "not_received":
        return (state.status == DELIVERED and state.delivered_on is not None
                and (today - state.delivered_on).days >= policy.delivered_wait_days)
    return False


def guess_reason(order: Order, settings: Settings, now: dt.datetime) -> Optional[str]:
    """When the shopper did not say why, the parcel's state often does."""
    for parcel in parcels(order, settings, now):
        state = parcel.state
        if state.presumed_lost:
            return "lost"
        if state.status == EXCEPTION and state.delay_reason == DAMAGED:
            return "damaged"
        if state.is_late:
            return "late"
    return None


def existing_resolution(session: Session, order: Order, reason: str) -> Optional[Resolution]:
    return session.scalars(select(Resolution).where(Resolution.order_id == order.id,
                                                    Resolution.reason == reason)).first()


def decide(*, session: Session, order: Order, reason: str, settings: Settings, now: dt.datetime) -> Decision:
    """Whether this claim can be settled by the bot, must wait, or needs a person."""
    policy = settings.policy
    today = now.astimezone(settings.tz).date()
    existing = existing_resolution(session, order, reason)
    if existing is not None:
        return Decision(ALREADY, reason, _already_text(existing), existing=existing)
    found = parcels(order, settings, now)
    fitting = [p for p in found if _fits(p, reason, settings, today)]
    if not fitting:
        return Decision(NOT_YET, reason, _not_yet_text(order, found, reason, settings, today))
    parcel = fitting[0]
    if order.value > policy.human_value_threshold:
        return Decision(HUMAN, reason, "This order is above the value I can settle myself, so a colleague "
                        "will take it from here.", parcel, human_reason="high_value")
    if _repeat_claim(session, order, now, policy.repeat_claim_window_days):
        return Decision(HUMAN, reason, "I see an earlier claim on your account, so a colleague will look at "
                        "this one personally.", parcel, human_reason="repeat_claim")
    return Decision(ELIGIBLE, reason, "You can choose a full refund or a free replacement.", parcel)


def _repeat_claim(session: Session, order: Order, now: dt.datetime, window_days: int) -> bool:
    since = now - dt.timedelta(days=window_days)
    earlier = session.scalars(
        select(Resolution).join(Order, Resolution.order_id == Order.id)
        .where(Order.customer_id == order.customer_id, Resolution.created_at >= since)
    ).first()
    return earlier is not None


def _already_text(resolution: Resolution) -> str:
    what = {"refund": f"a refund of {resolution.amount} {resolution.currency}", "reship": "a replacement",
            "credit": "a credit"}[resolution.kind]
    return f"This is already settled: {what} was arranged on {day(resolution.created_at.date())}."


def _not_yet_text(order: Order, found: List[Parcel], reason: str, settings: Settings, today: dt.date) -> str:
    policy = settings.policy
    if not found:
        return f"Order {order.number} hasn't shipped yet, so there's nothing to claim for. It's being packed."
    state = found[0].state
    if reason == "not_received" and state.status == DELIVERED and state.delivered_on:
        wait_until = state.delivered_on + dt.timedelta(days=policy.delivered_wait_days)
        return (f"The carrier marked it delivered {day(state.delivered_on, today)}. Parcels marked delivered "
                f"sometimes turn up with a neighbour or in a safe place: please check, and if it hasn't appeared "
                f"by {day(wait_until, today)}, ask me again and I'll sort out a refund or replacement.")
    if reason == "late" and state.is_late:
        return (f"It's {state.days_late} days late. We offer a refund or replacement from "
                f"{policy.late_claim_days} days late; until then it's still likely to arrive.")
    if reason == "lost" and state.stalled:
        return (f"There has been no scan for {state.business_days_without_scan} business days. We treat a "
                f"parcel as lost after {policy.lost_business_days}, so it may still turn up.")
    return ("From the carrier's tracking it's still on its way and not late enough to claim for yet. "
            "I can tell you where it is, or put you through to a colleague.")


def amount_for(order: Order, parcel: Parcel) -> Decimal:
    """The refund for one parcel: its share of the order's value."""
    share = order.value / max(1, len(order.shipments))
    return share.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def record_resolution(*, session: Session, order: Order, parcel: Parcel, reason: str, kind: str,
                      conversation_id: str) -> Resolution:
    """Record the refund or reship once; asking again returns the first one unchanged.

    The unique constraint on (shipment, reason) decides races between two
    requests: the loser gets the winner's row.
    """
    existing = session.scalars(select(Resolution).where(Resolution.shipment_id == parcel.shipment.id,
                                                        Resolution.reason == reason)).first()
    if existing is not None:
        return existing
    resolution = Resolution(order_id=order.id, shipment_id=parcel.shipment.id, reason=reason, kind=kind,
                            amount=amount_for(order, parcel) if kind == "refund" else Decimal("0"),
                            currency=order.currency, conversation_id=conversation_id)
    try:
        with session.begin_nested():
            session.add(resolution)
            session.flush()
    except IntegrityError:
        return session.scalars(select(Resolution).where(Resolution.shipment_id == parcel.shipment.id,
                                                        Resolution.reason == reason)).one()
    audit(session=session, actor="bot", action=f"resolution.{kind}", entity="order", entity_id=order.number,
          details={"reason": reason, "shipment": parcel.shipment.tracking_number, "amount": str(resolution.amount),
                   "conversation_id": conversation_id})
    return resolution


def next_steps(resolution: Resolution) -> str:
    if resolution.kind == "refund":
        return (f"Done: a refund of {resolution.amount} {resolution.currency} is on its way to your original "
                "payment method. It usually shows within 3-5 business days.")
    return ("Done: a replacement is booked and ships within one business day. You'll get a new tracking link "
            "by email.")

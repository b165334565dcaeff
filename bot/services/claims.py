"""Refund or reship: who is eligible, and recording the outcome exactly once."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Dict, List, Optional, Tuple

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.config import Settings
from bot.domain.enums import ClaimOutcome, ClaimReason, DelayReason, HandoffReason, ResolutionKind, Status
from bot.domain.tracking import claim_fits, late_claim_from
from bot.services.answers import Parcel, _on, day, parcels
from bot.store.models import Order, Resolution
from bot.store.queries import audit

CLAIM_REASONS = ClaimReason.values()

#: A domain response and its variables: what the shopper is told.
Wording = Tuple[str, Dict[str, str]]


@dataclass(frozen=True)
class Decision:
    """What the policy says about a claim, and the response that tells the shopper."""

    outcome: ClaimOutcome
    reason: str
    response: str
    wording: Dict[str, str]
    parcel: Optional[Parcel] = None
    human_reason: Optional[HandoffReason] = None
    existing: Optional[Resolution] = None
    #: A parcel the carrier marked delivered: the shopper checks with neighbours and safe places first.
    check_first: bool = False


def _fits(parcel: Parcel, reason: str, settings: Settings, today: dt.date) -> bool:
    return claim_fits(parcel.state, reason, settings.policy, today)


def guess_reason(order: Order, settings: Settings, now: dt.datetime) -> Optional[str]:
    """When the shopper did not say why, the parcel's state often does."""
    for parcel in parcels(order, settings, now):
        state = parcel.state
        if state.presumed_lost:
            return ClaimReason.LOST.value
        if state.status == Status.EXCEPTION and state.delay_reason == DelayReason.DAMAGED:
            return ClaimReason.DAMAGED.value
        if state.status == Status.RETURNED_TO_SENDER:
            return ClaimReason.NOT_RECEIVED.value
        if state.is_late:
            return ClaimReason.LATE.value
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
        return Decision(ClaimOutcome.ALREADY, reason, *already_settled(existing, settings.tz), existing=existing)
    found = parcels(order, settings, now)
    fitting = [p for p in found if _fits(p, reason, settings, today)]
    if not fitting:
        return Decision(ClaimOutcome.NOT_YET, reason, *_not_yet(order, found, reason, settings, today))
    parcel = fitting[0]
    if reason == ClaimReason.DAMAGED and parcel.state.status == Status.DELIVERED:
        # Damage only the shopper has seen: a colleague looks at a photo before anything is paid.
        return Decision(ClaimOutcome.HUMAN, reason, "utter_claim_photo", {}, parcel,
                        human_reason=HandoffReason.PHOTO_NEEDED)
    if order.value > policy.human_value_threshold:
        return Decision(ClaimOutcome.HUMAN, reason, "utter_claim_high_value", {}, parcel,
                        human_reason=HandoffReason.HIGH_VALUE)
    if _repeat_claim(session, order, now, policy.repeat_claim_window_days):
        return Decision(ClaimOutcome.HUMAN, reason, "utter_claim_repeat", {}, parcel,
                        human_reason=HandoffReason.REPEAT_CLAIM)
    if reason == ClaimReason.NOT_RECEIVED and parcel.state.status == Status.DELIVERED and parcel.state.delivered_on:
        # "It never came" for a parcel scanned as delivered: the scan first, then the checks, then the choice.
        scan = parcel.state.status_scan
        place = f" in {scan.location}" if scan is not None and scan.location else ""
        return Decision(ClaimOutcome.ELIGIBLE, reason, "utter_claim_delivered_scan",
                        {"carrier": parcel.shipment.carrier.name, "number": order.number, "place": place,
                         "delivered": _on(parcel.state.delivered_on, today)}, parcel, check_first=True)
    return Decision(ClaimOutcome.ELIGIBLE, reason, "utter_claim_eligible", {}, parcel)


def _repeat_claim(session: Session, order: Order, now: dt.datetime, window_days: int) -> bool:
    since = now - dt.timedelta(days=window_days)
    earlier = session.scalars(
        select(Resolution).join(Order, Resolution.order_id == Order.id)
        .where(Order.customer_id == order.customer_id, Resolution.created_at >= since)
    ).first()
    return earlier is not None


def already_settled(resolution: Resolution, tz: dt.tzinfo) -> Wording:
    """The answer to a claim settled before: what was arranged, and when (the day in the shop's zone)."""
    when = day(resolution.created_at.astimezone(tz).date())
    if resolution.kind == ResolutionKind.REFUND:
        return "utter_claim_already_refunded", {"amount": str(resolution.amount), "currency": resolution.currency,
                                                "date": when}
    if resolution.kind == ResolutionKind.RESHIP:
        return "utter_claim_already_reshipped", {"date": when}
    return "utter_claim_already_credited", {"date": when}


def _not_yet(order: Order, found: List[Parcel], reason: str, settings: Settings, today: dt.date) -> Wording:
    policy = settings.policy
    if not found:
        return "utter_claim_not_shipped", {"number": order.number}
    state = found[0].state
    if reason == ClaimReason.NOT_RECEIVED and state.status == Status.DELIVERED and state.delivered_on:
        wait_until = state.delivered_on + dt.timedelta(days=policy.delivered_wait_days)
        return "utter_claim_wait_after_delivery", {"delivered": day(state.delivered_on, today),
                                                   "wait_until": day(wait_until, today)}
    if reason in (ClaimReason.LATE, ClaimReason.LOST) and state.stalled:
        opens = late_claim_from(state, policy)
        return "utter_claim_stalled", {"quiet_days": str(state.business_days_without_scan or 0),
                                       "from": _on(opens, today) if opens else "later",
                                       "carrier": found[0].shipment.carrier.name}
    if reason == ClaimReason.LATE and state.is_late:
        opens = late_claim_from(state, policy)
        return "utter_claim_not_late_enough", {"days_late": str(state.days_late),
                                               "claim_days": str(policy.late_claim_days),
                                               "from": _on(opens, today) if opens else "later"}
    if reason == ClaimReason.LOST and state.stalled:
        return "utter_claim_not_lost_yet", {"quiet_days": str(state.business_days_without_scan),
                                            "lost_days": str(policy.lost_business_days)}
    return "utter_claim_not_yet", {}


def amount_for(order: Order, parcel: Parcel) -> Decimal:
    """The refund for one parcel: its share of the order's value."""
    return _share(order)


def _share(order: Order) -> Decimal:
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
                            amount=amount_for(order, parcel) if kind == ResolutionKind.REFUND else Decimal("0"),
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


def next_steps(resolution: Resolution, order_number: str) -> Wording:
    """What happens now that the refund or replacement is recorded, naming the order it is for."""
    if resolution.kind == ResolutionKind.REFUND:
        return "utter_refund_done", {"amount": str(resolution.amount), "currency": resolution.currency,
                                     "number": order_number}
    return "utter_reship_done", {"number": order_number}


def can_switch(resolution: Resolution, settings: Settings, now: dt.datetime) -> bool:
    """Whether a booked refund or replacement may still become the other (it has not been carried out)."""
    created = resolution.created_at
    if created.tzinfo is None:
        created = created.replace(tzinfo=dt.timezone.utc)
    return resolution.kind in (ResolutionKind.REFUND, ResolutionKind.RESHIP) and \
        now - created <= dt.timedelta(hours=settings.policy.resolution_change_hours)


def switch_resolution(*, session: Session, order: Order, resolution: Resolution, settings: Settings,
                      now: dt.datetime, conversation_id: str) -> bool:
    """Turn a booked replacement into a refund, or the reverse, while it has not been carried out yet.

    A booking is carried out `POLICY_RESOLUTION_CHANGE_HOURS` after it was made
    (the time the warehouse and payments take to act on it); until then the
    shopper may change their mind.  The change is audited.  False when it is too late.
    """
    if not can_switch(resolution, settings, now):
        return False
    old = resolution.kind
    if old == ResolutionKind.RESHIP:
        resolution.kind, resolution.amount = ResolutionKind.REFUND.value, _share(order)
    else:
        resolution.kind, resolution.amount = ResolutionKind.RESHIP.value, Decimal("0")
    audit(session=session, actor="bot", action=f"resolution.{resolution.kind}", entity="order",
          entity_id=order.number, details={"changed_from": str(old), "reason": resolution.reason,
                                           "amount": str(resolution.amount), "conversation_id": conversation_id})
    session.flush()
    return True

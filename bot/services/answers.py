"""What the assistant says about an order, in plain words, from the store's facts only.

Fixed wording lives in `domain.yml` responses, with variables.  The answers
that must be composed sentence by sentence (status, delay, when a person will
answer) are built here and nowhere else, so every shopper-facing text is in one
of those two places.  Every sentence is built from a stored value: no date,
status or policy is ever invented.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from bot.config import Settings
from bot.domain.carriers import REASON_LABELS, STATUS_LABELS
from bot.domain.enums import Status
from bot.domain.tracking import ShipmentState
from bot.store.models import Order, Shipment
from bot.store.queries import shipment_state, shipment_tracking_url


def day(value: dt.date, today: Optional[dt.date] = None) -> str:
    if today is not None:
        if value == today:
            return "today"
        if value == today + dt.timedelta(days=1):
            return "tomorrow"
        if value == today - dt.timedelta(days=1):
            return "yesterday"
    return f"{value:%a} {value.day} {value:%b}"


def moment(value: dt.datetime, settings: Settings, today: dt.date) -> str:
    local = value.astimezone(settings.tz)
    return f"{day(local.date(), today)} at {local:%H:%M}"


def mask_email(email: str) -> str:
    """`jane.doe@example.com` -> `j******e@example.com`."""
    local, _, domain = email.partition("@")
    if len(local) <= 2:
        return f"{local[:1]}*@{domain}"
    return f"{local[0]}{'*' * (len(local) - 2)}{local[-1]}@{domain}"


def mask_address(line1: str, postcode: str, city: str) -> str:
    """Enough to recognise one's own address, not enough to learn someone else's."""
    words = line1.split()
    street = " ".join(w if any(c.isdigit() for c in w) or len(w) <= 3 else w[:2] + "*" * (len(w) - 2) for w in words)
    code = postcode[:2] + "*" * max(0, len(postcode.replace(" ", "")) - 2)
    return f"{street}, {code} {city}"


@dataclass(frozen=True)
class Parcel:
    shipment: Shipment
    state: ShipmentState


def parcels(order: Order, settings: Settings, now: dt.datetime) -> List[Parcel]:
    return [Parcel(s, shipment_state(s, settings=settings, now=now)) for s in order.shipments]


_STATUS_SENTENCE: Dict[str, str] = {
    Status.INFO_RECEIVED: "the label is ready and {carrier} will pick it up soon",
    Status.IN_TRANSIT: "it's on its way with {carrier}",
    Status.OUT_FOR_DELIVERY: "it's out for delivery with {carrier} today",
    Status.FAILED_ATTEMPT: "{carrier} tried to deliver it but nobody could take it",
    Status.AVAILABLE_FOR_PICKUP: "it's waiting for you at a {carrier} pickup point",
    Status.DELIVERED: "{carrier} delivered it {when}",
    Status.EXCEPTION: "{carrier} has it on hold because of {reason}",
    Status.LOST: "{carrier} has lost track of it",
    Status.RETURNED_TO_SENDER: "{carrier} sent it back to us",
}


#: Statuses after which an expected delivery date means nothing.
_NO_ESTIMATE = (Status.DELIVERED, Status.LOST, Status.RETURNED_TO_SENDER, Status.AVAILABLE_FOR_PICKUP)


def parcel_lines(parcel: Parcel, settings: Settings, now: dt.datetime) -> List[str]:
    state, shipment = parcel.state, parcel.shipment
    today = now.astimezone(settings.tz).date()
    carrier = shipment.carrier.name
    reason = REASON_LABELS.get(state.delay_reason or "", "a problem")
    when = day(state.delivered_on, today) if state.delivered_on else ""
    lines = [_STATUS_SENTENCE.get(state.status, "it's with {carrier}").format(carrier=carrier, reason=reason,
                                                                                when=when)]
    lines[0] = lines[0][:1].upper() + lines[0][1:] + "."
    if state.presumed_lost and state.carrier_status != Status.LOST:
        lines[0] = (f"There has been no scan from {carrier} for {state.business_days_without_scan} business days, "
                    "so we treat it as lost.")
    scan = state.last_scan
    if scan is not None:
        place = f" in {scan.location}" if scan.location else ""
        text = scan.text or "scan"
        lines.append(f"Last scan: {text}{place}, {moment(scan.occurred_at, settings, today)}.")
    if state.eta and state.status not in _NO_ESTIMATE:
        lines.append(f"Expected delivery: {day(state.eta, today)}.")
    lines.append(f"Tracking: {shipment_tracking_url(shipment)}")
    return lines


def status_messages(order: Order, settings: Settings, now: dt.datetime) -> List[str]:
    """The answer to "where is my order?": one message per parcel."""
    today = now.astimezone(settings.tz).date()
    if not order.shipments or all(s.status == Status.PENDING and not s.events for s in order.shipments):
        promise = f" We promised delivery by {day(order.promised_date, today)}." if order.promised_date else ""
        return [f"Order {order.number} hasn't shipped yet: it's being packed in our warehouse.{promise} "
                "You'll get a tracking link as soon as it leaves."]
    found = parcels(order, settings, now)
    if len(found) == 1:
        return [f"Order {order.number}: " + " ".join(parcel_lines(found[0], settings, now))]
    messages = [f"Order {order.number} ships in {len(found)} parcels."]
    for index, parcel in enumerate(found, start=1):
        messages.append(f"Parcel {index} ({parcel.shipment.carrier.name} {parcel.shipment.tracking_number}): "
                        + " ".join(parcel_lines(parcel, settings, now)))
    return messages


@dataclass(frozen=True)
class DelayAnswer:
    messages: Tuple[str, ...]
    late: bool
    goodwill_code: Optional[str]
    claim_possible: bool


def delay_answer(order: Order, settings: Settings, now: dt.datetime) -> DelayAnswer:
    """Promise against reality: how late, why, the new estimate, and what the shop does about it."""
    policy = settings.policy
    today = now.astimezone(settings.tz).date()
    promised = order.promised_date
    found = parcels(order, settings, now)
    if not found:
        text = f"Order {order.number} hasn't shipped yet."
        if promised and today > promised + dt.timedelta(days=policy.grace_days):
            days = (today - promised).days
            text += (f" We promised it by {day(promised, today)}, so it's {days} days late. I'm sorry. "
                     "I'll make sure the team looks at it.")
            return DelayAnswer((text,), True, None, False)
        if promised:
            text += f" It isn't late: we promised delivery by {day(promised, today)}."
        return DelayAnswer((text,), False, None, False)

    messages: List[str] = []
    worst = 0
    any_late = False
    for parcel in found:
        state = parcel.state
        label = (f"Parcel {parcel.shipment.tracking_number}" if len(found) > 1 else f"Order {order.number}")
        if state.delivered and state.delivered_on is not None:
            note = f"{label} was delivered {day(state.delivered_on, today)}"
            note += f", {state.days_late} days after the promised date." if state.is_late else ", on time."
            messages.append(note)
            continue
        if not (state.is_late or state.expected_late or state.stalled or state.presumed_lost):
            # A parcel at the pickup point has arrived; an estimate already past says nothing.
            waiting = state.status == Status.AVAILABLE_FOR_PICKUP or (state.eta is not None and state.eta < today)
            eta = f" and is expected {day(state.eta, today)}" if state.eta and not waiting else ""
            by = f" We promised it by {day(promised, today)}." if promised else ""
            messages.append(f"{label} isn't late: it's {STATUS_LABELS.get(state.status, state.status)}{eta}.{by}")
            continue
        any_late = True
        worst = max(worst, state.days_late)
        parts = []
        if state.is_late and promised:
            parts.append(f"{label} is {state.days_late} days past the date we promised ({day(promised, today)}).")
        elif state.expected_late and promised:
            parts.append(f"{label} will arrive after the date we promised ({day(promised, today)}).")
        else:
            parts.append(f"{label} is held up.")
        if state.delay_reason:
            parts.append(f"The carrier reported {REASON_LABELS[state.delay_reason]}.")
        elif state.presumed_lost:
            parts.append(f"There has been no scan for {state.business_days_without_scan} business days, "
                         "so we treat it as lost.")
        elif state.stalled:
            parts.append(f"There has been no scan for {state.business_days_without_scan} business days.")
        else:
            parts.append("The carrier hasn't given a reason.")
        if state.eta and state.eta >= today:
            parts.append(f"The new estimate is {day(state.eta, today)}.")
        messages.append(" ".join(parts))

    if not any_late:
        return DelayAnswer(tuple(messages), False, None, False)
    messages.append("I'm sorry about the wait.")
    code = None
    if policy.goodwill_code and worst >= policy.goodwill_after_days_late:
        code = policy.goodwill_code
        messages.append(f"As an apology, here is a discount code for your next order: {code}")
    claim = any(p.state.presumed_lost or (p.state.is_late and p.state.days_late >= policy.late_claim_days)
                for p in found)
    return DelayAnswer(tuple(messages), True, code, claim)


def reply_time(*, local_now: dt.datetime, opening: Optional[dt.datetime] = None,
               closes: Optional[dt.datetime] = None) -> str:
    """When a person will answer, for `utter_handoff_later`: the next opening, or "as soon as someone is back".

    `closes`: agent hours are on but nobody is online; they end at this time today.
    """
    if closes is not None:
        return f"as soon as someone is back (we're open until {closes:%H:%M} today)"
    if opening is None:
        return "as soon as someone is back"
    when = day(opening.date(), local_now.date())
    if when in ("today", "tomorrow"):
        return f"{when} from {opening:%H:%M}"
    return f"from {day(opening.date())}, {opening:%H:%M}"


def summary_line(order: Order, found: Sequence[Parcel]) -> str:
    statuses = ", ".join(f"{p.shipment.carrier.code} {p.shipment.tracking_number}: {p.state.status}" for p in found)
    return f"{order.number} ({order.value} {order.currency}); {statuses or 'not shipped'}"

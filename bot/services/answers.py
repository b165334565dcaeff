"""What the assistant says about an order, in plain words, from the store's facts only.

Fixed wording lives in `domain.yml` responses, with variables.  The answers
that must be composed sentence by sentence (status, delay, when a person will
answer) are built here, and the answers to follow-up questions in
`bot.services.followups` from the same pieces, so every shopper-facing text is in one
of those two places.  Every sentence is built from a stored value: no date,
status or policy is ever invented, and an estimate that has gone by is never
given as one.  A late or troubled parcel's answer leads with the problem, says
sorry (with the goodwill step the policy allows) and ends with what happens
next, with an offer (buttons) when the shopper can act on it straight away.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from sqlalchemy.orm import object_session

from bot.config import Settings
from bot.domain.carriers import (
    MISSED_DELIVERY_FALLBACK,
    PICKUP_HOLD_DAYS_FALLBACK,
    REASON_LABELS,
    built_in_carrier,
)
from bot.domain.enums import ClaimReason, DelayReason, HandoffReason, Status
from bot.domain.eta import CARRIER, CARRIER_DATE, HISTORY, EtaRange, day, describe_range
from bot.domain.tracking import Scan, ShipmentState, claim_fits, late_claim_from
from bot.services.eta import shipment_eta_range
from bot.store.models import Order, Shipment
from bot.store.queries import shipment_state, shipment_tracking_url

# `day`, the way every answer writes a day, lives in bot.domain.eta beside the ranges; the other
# services import it from here.


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


@dataclass(frozen=True)
class Offer:
    """What an answer ends with instead of "anything else?": a domain response with buttons, and the slots it sets.

    `claim_reason` is the reason a refund-or-replacement claim started from
    the buttons is made for; `handoff_reason` the reason a "yes" to a person is
    handed over with.
    """

    response: str
    claim_reason: Optional[str] = None
    handoff_reason: Optional[str] = None


#: Refund or replacement, the choice of the claim flow (its buttons start it).
OFFER_CLAIM = "utter_offer_claim"
#: Change the address, or refund or replacement: for a parcel sent back to the shop.
OFFER_RETURNED = "utter_offer_returned"
#: A colleague: for what only a person can take up with the carrier or the warehouse.
OFFER_HUMAN = "utter_offer_human"
#: When a parcel needs more than one, the first of these is offered.
_OFFER_RANK = (OFFER_CLAIM, OFFER_RETURNED, OFFER_HUMAN)


@dataclass(frozen=True)
class Answer:
    """A composed answer: its messages, whether anything is late, and what it offers next."""

    messages: Tuple[str, ...]
    late: bool
    goodwill_code: Optional[str]
    offer: Optional[Offer] = None
    #: The message saying what happens next (also the last of `messages`), when there is one.
    steps: Optional[str] = None

    @property
    def claim_possible(self) -> bool:
        return self.offer is not None and self.offer.response == OFFER_CLAIM


def _days(count: int) -> str:
    return f"{count} day" if count == 1 else f"{count} days"


def _on(value: dt.date, today: dt.date) -> str:
    """`day` after a verb: "tomorrow", "on Fri 20 Nov"."""
    when = day(value, today)
    return when if when in ("today", "tomorrow", "yesterday") else f"on {when}"


def _masked_address(order: Order) -> str:
    return f"{mask_address(order.ship_line1, order.ship_postcode, order.ship_city)}, {order.ship_country}"


def _hold_days(shipment: Shipment, settings: Settings) -> int:
    if settings.policy.pickup_hold_days is not None:
        return settings.policy.pickup_hold_days
    known = built_in_carrier(shipment.carrier.code)
    return known.pickup_hold_days if known else PICKUP_HOLD_DAYS_FALLBACK


def _missed_delivery(shipment: Shipment) -> str:
    known = built_in_carrier(shipment.carrier.code)
    return known.missed_delivery if known else MISSED_DELIVERY_FALLBACK


#: What each status says while the parcel is still on its way to the shopper.
_MOVING: Dict[str, str] = {
    Status.PENDING: "It's with {carrier}.",
    Status.INFO_RECEIVED: "The label is ready and {carrier} will pick it up soon.",
    Status.IN_TRANSIT: "It's on its way with {carrier}.",
    Status.OUT_FOR_DELIVERY: "It's out for delivery with {carrier} today.",
}

_CLAIM_NOW = "We'll put it right: you can have a full refund or a free replacement."
_LATE_ENOUGH = "It's now late enough for a refund or a replacement, if you'd rather not wait."
_NEIGHBOURS = "If you can't find it, check with your neighbours and around your door or any safe place."


@dataclass(frozen=True)
class _Facts:
    """One parcel's facts, as the sentences about it need them."""

    order: Order
    shipment: Shipment
    state: ShipmentState
    settings: Settings
    today: dt.date
    #: When it should arrive (`bot.services.eta`), never starting before today; None: nothing still to come.
    eta_range: Optional[EtaRange] = None

    @property
    def carrier(self) -> str:
        return self.shipment.carrier.name

    @property
    def estimate(self) -> Optional[EtaRange]:
        """The range to give: `eta_range`, else the carrier's date (facts built without a range)."""
        if self.eta_range is not None:
            return self.eta_range
        return EtaRange(self.eta, self.eta, CARRIER_DATE) if self.eta is not None else None

    def when(self, estimate: EtaRange) -> str:
        """An estimate as the answers write it: "Fri 20 Nov", "tomorrow", "between Thu 19 and Fri 20 Nov"."""
        return describe_range(estimate, self.today, on=False)

    @property
    def promised(self) -> Optional[dt.date]:
        return self.state.promised_date

    @property
    def eta(self) -> Optional[dt.date]:
        """The carrier's estimate, unless it has already gone by."""
        eta = self.state.eta
        return eta if eta is not None and eta >= self.today else None

    @property
    def past(self) -> bool:
        """The promised date has gone by."""
        return self.promised is not None and self.state.days_late > 0

    @property
    def likely(self) -> bool:
        """Not late yet, but the estimate is after the promise."""
        return not self.past and self.promised is not None and self.eta is not None and self.eta > self.promised

    @property
    def reason(self) -> Optional[str]:
        return REASON_LABELS.get(self.state.delay_reason or "")

    def day(self, value: dt.date) -> str:
        return day(value, self.today)

    def local_day(self, value: dt.datetime) -> dt.date:
        return value.astimezone(self.settings.tz).date()

    def at(self, scan: Optional[Scan]) -> str:
        """When a scan happened, to follow a verb (" yesterday at 15:53"); empty without one."""
        return f" {moment(scan.occurred_at, self.settings, self.today)}" if scan is not None else ""

    def quiet(self) -> str:
        """How long the carrier has been silent."""
        scan = self.state.last_scan
        if scan is None:
            return f"There has been no scan from {self.carrier} yet"
        return (f"There has been no scan from {self.carrier} since {self.day(self.local_day(scan.occurred_at))} "
                f"({self.state.business_days_without_scan} business days)")


@dataclass
class _Reading:
    """One parcel as the shopper is told it: the problem first, the facts, then what happens next."""

    #: Continues the parcel's label ("Order WS-1 is late: ..."); otherwise the label is followed by ": ".
    predicate: Optional[str] = None
    sentences: List[str] = field(default_factory=list)
    next_steps: List[str] = field(default_factory=list)
    offer: Optional[Offer] = None
    late: bool = False  # past the date promised, or likely to be
    sorry: bool = False  # a problem or a delay we apologise for
    trouble: bool = False  # lost, damaged, sent back or held: more than a wait
    days_late: int = 0  # for the goodwill step

    def text(self, label: str) -> str:
        if self.predicate:
            return " ".join([f"{label} {self.predicate}", *self.sentences])
        first, *rest = self.sentences
        return " ".join([f"{label}: {first[:1].upper()}{first[1:]}", *rest])

    def propose(self, offer: Offer) -> None:
        if self.offer is None or _OFFER_RANK.index(offer.response) < _OFFER_RANK.index(self.offer.response):
            self.offer = offer


def _read(facts: _Facts, *, delay: bool, all_delivered: bool) -> _Reading:
    """What to say about one parcel; `delay` for the answer to "why is it late?"."""
    state = facts.state
    read = _Reading()
    if state.status == Status.DELIVERED and state.delivered_on is not None:
        _delivered(read, facts, delay=delay, all_delivered=all_delivered)
    elif state.status == Status.AVAILABLE_FOR_PICKUP:
        _at_pickup_point(read, facts, delay=delay)
    else:
        read.late = facts.past or facts.likely
        read.days_late = state.days_late if facts.past else 0
        if state.presumed_lost:
            _lost(read, facts)
        elif state.status == Status.RETURNED_TO_SENDER:
            _returned(read, facts)
        elif state.status == Status.EXCEPTION and state.delay_reason == DelayReason.DAMAGED:
            _damaged(read, facts)
        else:
            _on_the_way(read, facts, delay=delay)
            return read
        if facts.past and facts.promised is not None:
            read.sentences.append(f"Your order is now {_days(state.days_late)} late: we promised it by "
                                  f"{facts.day(facts.promised)}.")
    return read


def _offer_claim(read: _Reading, facts: _Facts, reason: ClaimReason, words: str) -> None:
    """The refund-or-replacement step; above the value the bot settles, a colleague's instead (no promise)."""
    if facts.order.value > facts.settings.policy.human_value_threshold:
        read.next_steps.append("A colleague will sort out a refund or a replacement with you: this order is above "
                               "the value I can settle myself.")
        read.propose(Offer(OFFER_HUMAN, handoff_reason=HandoffReason.HIGH_VALUE.value))
        return
    read.next_steps.append(words)
    read.propose(Offer(OFFER_CLAIM, claim_reason=reason.value))


def _lost(read: _Reading, facts: _Facts) -> None:
    read.sorry = read.trouble = True
    if facts.state.carrier_status == Status.LOST:
        read.sentences.append(f"{facts.carrier} has lost track of it.")
    else:
        read.sentences.append(f"{facts.quiet()}, so we treat it as lost.")
    _offer_claim(read, facts, ClaimReason.LOST, _CLAIM_NOW)


def _returned(read: _Reading, facts: _Facts) -> None:
    read.sorry = read.trouble = True
    scan = facts.state.status_scan
    back = f" {facts.day(facts.local_day(scan.occurred_at))}" if scan is not None else ""
    because = f" because of {facts.reason}" if facts.reason else ""
    read.sentences.append(f"{facts.carrier} sent it back to us{back}{because}.")
    read.next_steps.append(f"It was going to {_masked_address(facts.order)}. If that address is wrong, change it "
                           "and we'll send the parcel again; if it's right, choose a refund or a replacement.")
    read.propose(Offer(OFFER_RETURNED, claim_reason=ClaimReason.NOT_RECEIVED.value))


def _damaged(read: _Reading, facts: _Facts) -> None:
    read.sorry = read.trouble = True
    scan = facts.state.status_scan
    place = f" in {scan.location}" if scan is not None and scan.location else ""
    read.sentences.append(f"{facts.carrier} reported it damaged{facts.at(scan)}{place}.")
    _offer_claim(read, facts, ClaimReason.DAMAGED, "You don't need to wait for it: you can have a refund or a "
                 "replacement now. If it still reaches you, keep it and its packaging: a colleague will ask you for a "
                 "photo of the damage.")


def _on_the_way(read: _Reading, facts: _Facts, *, delay: bool) -> None:
    """Moving, held by the carrier, or after a missed delivery: the problem, how late, the estimate, what next."""
    state, carrier, promised = facts.state, facts.carrier, facts.promised
    held = state.status == Status.EXCEPTION
    customs = held and state.delay_reason == DelayReason.CUSTOMS
    read.sorry = facts.past or facts.likely or state.stalled
    expects = (f"{carrier} now expects it {_carrier_expects(facts)}, after the date we promised "
               f"({facts.day(promised)})." if facts.likely and facts.eta and promised else "")
    if state.status in _MOVING:
        what = _MOVING[state.status].format(carrier=carrier)
        scan = state.status_scan
        went = facts.local_day(scan.occurred_at) if scan is not None else facts.today
        if state.status == Status.OUT_FOR_DELIVERY and went != facts.today:
            what = f"It went out for delivery with {carrier} {facts.day(went)}."
        if facts.past and promised:
            read.predicate = (f"is late: it's {_days(state.days_late)} past the date we promised "
                              f"({facts.day(promised)}).")
        elif facts.likely:
            read.predicate = f"is likely to be late: {expects}"
        elif delay and not state.stalled:
            _not_late(read, facts, what)
            return
        if state.stalled:
            read.sentences.append(f"{facts.quiet()}.")  # the last scan follows: no "on its way" without a sign of it
        elif facts.reason and read.predicate:
            read.sentences += [f"{carrier} reported {facts.reason}.", what]
        elif facts.past:
            read.sentences += [f"{carrier} hasn't given a reason.", what]
        else:
            read.sentences.append(what)
    else:
        _held_or_missed(read, facts)
        if state.stalled:
            read.sentences.append(f"{facts.quiet()}.")
        if facts.past and promised:
            read.sentences.append(f"It's now {_days(state.days_late)} late: we promised it by "
                                  f"{facts.day(promised)}.")
        elif facts.likely:
            read.sentences.append(f"It's likely to be late: {expects}")
    if not facts.likely and not state.stalled and (not held or customs):
        _estimate(read, facts)
    _late_steps(read, facts)


def _carrier_expects(facts: _Facts) -> str:
    """The carrier's date after the promise; its own range instead when all of that range is after it."""
    assert facts.eta is not None
    estimate, promised = facts.eta_range, facts.promised
    if (estimate is not None and estimate.source == CARRIER and promised is not None
            and estimate.earliest > promised):
        return facts.when(estimate)
    return facts.day(facts.eta)


def _expected_delivery(facts: _Facts) -> Optional[str]:
    """The estimate of a parcel not yet late: "Expected delivery: ..."; or that the carrier's has gone by."""
    estimate, carrier, first = facts.estimate, facts.carrier, facts.state.eta
    if estimate is None:
        if first is not None:
            return f"It's taking longer than {carrier} first estimated, and they haven't given a new date yet."
        return None
    if facts.state.status == Status.OUT_FOR_DELIVERY and estimate.latest == facts.today:
        return None  # "out for delivery with DHL today" says it
    if estimate.source == HISTORY and first is not None and first < facts.today:
        return f"It's taking longer than {carrier} first estimated; we now expect it {facts.when(estimate)}."
    return f"Expected delivery: {facts.when(estimate)}."


def _not_late(read: _Reading, facts: _Facts, what: str) -> None:
    """The delay answer for a parcel on time: it isn't late, with the estimate and the promise."""
    read.predicate = f"isn't late: {what[:1].lower()}{what[1:]}"
    expected = _expected_delivery(facts)
    if expected:
        read.sentences.append(expected)
    if facts.promised is not None:
        read.sentences.append(f"We promised it by {facts.day(facts.promised)}.")


def _held_or_missed(read: _Reading, facts: _Facts) -> None:
    """A missed delivery or a carrier's hold: what happened, and what the shopper or a colleague can do."""
    state, carrier = facts.state, facts.carrier
    when = facts.at(state.status_scan)
    if state.status == Status.FAILED_ATTEMPT:
        read.sentences.append(f"{carrier} tried to deliver it{when} but nobody could take it.")
        read.next_steps.append(_missed_delivery(facts.shipment))
    elif state.delay_reason == DelayReason.CUSTOMS:
        read.sentences.append(f"It's held at customs: {carrier} reported a customs check{when}.")
        read.next_steps.append(f"Customs checks parcels that cross a border before they can go on; {carrier} "
                               f"delivers it once it's cleared. {facts.settings.policy.duties}")
    else:
        read.sorry = read.trouble = True
        if state.delay_reason == DelayReason.ADDRESS_PROBLEM:
            read.sentences.append(f"{carrier} is holding it because of a problem with the delivery address.")
            read.next_steps.append(f"It's going to {_masked_address(facts.order)}. A colleague can sort out the "
                                   f"address with {carrier}.")
        else:
            read.sentences.append(f"{carrier} has it on hold because of {facts.reason or 'a problem'}.")
            read.next_steps.append(f"A colleague can check with {carrier} what's wrong.")
        read.propose(Offer(OFFER_HUMAN, handoff_reason=HandoffReason.DELIVERY_PROBLEM.value))


def _estimate(read: _Reading, facts: _Facts) -> None:
    """The estimate, never a day already gone: an overdue estimate is said to be overdue.

    The carrier's own range or date is given as theirs; one from the shop's delivery history as ours.
    """
    state, carrier, estimate = facts.state, facts.carrier, facts.estimate
    ours = estimate is not None and estimate.source == HISTORY
    if facts.past:
        if estimate is None:
            read.sentences.append(f"{carrier} hasn't given a new delivery date yet.")
        elif not ours:
            read.sentences.append(f"{carrier} now expects it {facts.when(estimate)}.")
        elif facts.eta is None:
            read.sentences.append(f"{carrier} hasn't given a new delivery date yet; we expect it "
                                  f"{facts.when(estimate)}.")
        else:
            read.sentences.append(f"We now expect it {facts.when(estimate)}.")
    elif estimate is not None and not ours and state.status == Status.EXCEPTION:
        read.sentences.append(f"{carrier} still expects to deliver it {facts.when(estimate)}, once customs "
                              "clears it.")
    else:
        expected = _expected_delivery(facts)
        if expected:
            read.sentences.append(expected)


def _late_steps(read: _Reading, facts: _Facts) -> None:
    """For a late, likely late or silent parcel: a trace, and when a refund or replacement can be had."""
    state, policy = facts.state, facts.settings.policy
    if state.stalled:
        read.next_steps.append(f"A colleague can ask {facts.carrier} to trace it.")
        read.propose(Offer(OFFER_HUMAN, handoff_reason=HandoffReason.DELIVERY_PROBLEM.value))
    if not (facts.past or facts.likely or state.stalled):
        return
    if claim_fits(state, ClaimReason.LATE, policy, facts.today):
        _offer_claim(read, facts, ClaimReason.LATE, _LATE_ENOUGH)
        return
    opens = late_claim_from(state, policy)
    if opens is not None and opens > facts.today:
        read.next_steps.append(f"If it still isn't with you {_on(opens, facts.today)}, tell me and we'll refund or "
                               "replace it.")


def _delivered(read: _Reading, facts: _Facts, *, delay: bool, all_delivered: bool) -> None:
    """Delivered: when (and, for "it never came", where) first; then the checks and the claim."""
    state, carrier, promised = facts.state, facts.carrier, facts.promised
    assert state.delivered_on is not None
    scan = state.status_scan
    if delay:
        if promised is not None and state.delivered_on > promised:
            read.predicate = (f"was delivered {_days((state.delivered_on - promised).days)} after the date we "
                              f"promised ({facts.day(promised)}).")
        else:
            read.predicate = "was delivered on time."
        place = f" in {scan.location}" if scan is not None and scan.location else ""
        if scan is not None:
            read.sentences.append(f"{carrier} scanned it as delivered{facts.at(scan)}{place}.")
    else:
        read.sentences.append(f"{carrier} delivered it {facts.day(state.delivered_on)}.")
    if not all_delivered:
        return
    if claim_fits(state, ClaimReason.NOT_RECEIVED, facts.settings.policy, facts.today):
        if delay:
            read.next_steps.append(f"{_NEIGHBOURS} If it isn't there, we'll refund or replace it.")
            read.propose(Offer(OFFER_CLAIM, claim_reason=ClaimReason.NOT_RECEIVED.value))
        else:
            read.next_steps.append(f"{_NEIGHBOURS} If it isn't there, tell me and we'll refund or replace it.")
    else:
        wait_until = state.delivered_on + dt.timedelta(days=facts.settings.policy.delivered_wait_days)
        read.next_steps.append(f"{_NEIGHBOURS} Parcels marked delivered often turn up within a day or two; if it "
                               f"still isn't there {_on(wait_until, facts.today)}, tell me and we'll refund or "
                               "replace it.")


def _at_pickup_point(read: _Reading, facts: _Facts, *, delay: bool) -> None:
    """At a pickup point: where, until when, and what to bring."""
    state, shipment, carrier = facts.state, facts.shipment, facts.carrier
    scan = state.status_scan
    where = scan.location if scan is not None else ""
    point = "a pickup point" if where and carrier.lower() in where.lower() else f"a {carrier} pickup point"
    read.sentences.append(f"It's waiting for you at {point}" + (f": {where}." if where else "."))
    arrived = facts.local_day(scan.occurred_at) if scan is not None else None
    promised = facts.promised
    if arrived is not None and promised is not None and arrived > promised:
        read.days_late = (arrived - promised).days
        read.late = read.sorry = True
        read.sentences.append(f"It got there {facts.day(arrived)}, {_days(read.days_late)} after the date we "
                              f"promised ({facts.day(promised)}).")
    elif delay and arrived is not None:
        read.sentences.append(f"It got there {facts.day(arrived)}, in time for the date we promised.")
    bring = f"bring photo ID and the tracking number, {shipment.tracking_number}."
    if arrived is None:
        read.next_steps.append(bring[:1].upper() + bring[1:])
        return
    until = arrived + dt.timedelta(days=_hold_days(shipment, facts.settings))
    if until >= facts.today:
        read.next_steps.append(f"{carrier} keeps it there until {facts.day(until)}: {bring}")
    else:
        read.next_steps.append(f"{carrier} was keeping it there until {facts.day(until)}, so it may be on its way "
                               "back to us; if it comes back, we'll send it again or refund you.")


def _label(order: Order, found: Sequence[Parcel], index: int, *, delay: bool) -> str:
    if len(found) == 1:
        return f"Order {order.number}"
    shipment = found[index].shipment
    if delay:
        return f"Parcel {shipment.tracking_number}"
    return f"Parcel {index + 1} ({shipment.carrier.name} {shipment.tracking_number})"


def _unshipped(order: Order, settings: Settings, today: dt.date, *, delay: bool) -> Tuple[str, _Reading]:
    """An order still in the warehouse: the promise, and whether it is (or will be) late."""
    promised = order.promised_date
    read = _Reading()
    if promised is not None and today > promised:
        read.late = read.sorry = True
        read.days_late = (today - promised).days
        text = (f"Order {order.number} hasn't shipped yet, so it's late: it's {_days(read.days_late)} past the date "
                f"we promised ({day(promised, today)}).")
    elif promised is not None and today == promised:
        read.late = read.sorry = True
        text = (f"Order {order.number} hasn't shipped yet, so it's likely to be late: we promised delivery by "
                "today.")
    elif delay:
        by = f" It isn't late: we promised delivery by {day(promised, today)}." if promised else ""
        return f"Order {order.number} hasn't shipped yet.{by}", read
    else:
        by = f" We promised delivery by {day(promised, today)}." if promised else ""
        return (f"Order {order.number} hasn't shipped yet: it's being packed in our warehouse.{by} "
                "You'll get a tracking link as soon as it leaves."), read
    read.next_steps.append("A colleague can check with our warehouse when it will leave.")
    read.propose(Offer(OFFER_HUMAN, handoff_reason=HandoffReason.DELIVERY_PROBLEM.value))
    return text, read


def _compose(order: Order, settings: Settings, now: dt.datetime, *, delay: bool, goodwill: bool = True) -> Answer:
    today = now.astimezone(settings.tz).date()
    found = parcels(order, settings, now)
    messages: List[str] = []
    readings: List[Tuple[str, _Reading]] = []
    if not found or all(p.state.status == Status.PENDING and not p.shipment.events for p in found):
        text, read = _unshipped(order, settings, today, delay=delay)
        messages.append(text)
        readings.append((f"Order {order.number}", read))
    else:
        if len(found) > 1 and not delay:
            messages.append(f"Order {order.number} ships in {len(found)} parcels.")
        all_delivered = all(p.state.status == Status.DELIVERED for p in found)
        session = object_session(order)  # the store the order came from: its delivery history
        for index, parcel in enumerate(found):
            label = _label(order, found, index, delay=delay)
            expected = shipment_eta_range(session=session, shipment=parcel.shipment, settings=settings, now=now,
                                          state=parcel.state)
            facts = _Facts(order, parcel.shipment, parcel.state, settings, today, expected)
            read = _read(facts, delay=delay, all_delivered=all_delivered)
            lines = [read.text(label)]
            if not delay:
                scan = parcel.state.last_scan
                if scan is not None:
                    place = f" in {scan.location}" if scan.location else ""
                    when = moment(scan.occurred_at, settings, today)
                    lines.append(f"Last scan: {scan.text or 'scan'}{place}, {when}.")
                lines.append(f"Tracking: {shipment_tracking_url(parcel.shipment)}")
            messages.append(" ".join(lines))
            readings.append((label, read))

    policy = settings.policy
    late = any(read.late for _, read in readings)
    code = None
    if any(read.sorry for _, read in readings):
        trouble = any(read.trouble for _, read in readings)
        messages.append("I'm sorry about this." if trouble else "I'm sorry about the wait.")
        worst = max(read.days_late for _, read in readings)
        if goodwill and policy.goodwill_code and worst > 0 and worst >= policy.goodwill_after_days_late:
            code = policy.goodwill_code
            messages[-1] += f" As an apology, here is a discount code for your next order: {code}"
    steps = [(label, " ".join(read.next_steps)) for label, read in readings if read.next_steps]
    step_text = None
    if len(steps) == 1 and len(readings) == 1:
        step_text = steps[0][1]
    elif steps:
        step_text = " ".join(f"{label}: {step}" for label, step in steps)
    if step_text:
        messages.append(step_text)
    offers = [read.offer for _, read in readings if read.offer is not None]
    offer = min(offers, key=lambda o: _OFFER_RANK.index(o.response)) if offers else None
    return Answer(tuple(messages), late, code, offer, step_text)


def status_answer(order: Order, settings: Settings, now: dt.datetime, *, goodwill: bool = True) -> Answer:
    """The answer to "where is my order?": each parcel's problem first, the facts, then what happens next.

    `goodwill=False` when this conversation was already given the goodwill code: asked again, the
    shopper hears the same facts without a second code.
    """
    return _compose(order, settings, now, delay=False, goodwill=goodwill)


def status_messages(order: Order, settings: Settings, now: dt.datetime) -> List[str]:
    """The status answer's messages alone (one per parcel, then the apology and the next steps)."""
    return list(status_answer(order, settings, now).messages)


def delay_answer(order: Order, settings: Settings, now: dt.datetime, *, goodwill: bool = True) -> Answer:
    """Promise against reality: how late, why, the new estimate, and what the shop does about it."""
    return _compose(order, settings, now, delay=True, goodwill=goodwill)


def reply_time(*, local_now: dt.datetime, opening: Optional[dt.datetime]) -> str:
    """When the team is next in, for the hand-off answers: "from 09:00 tomorrow", "from 09:00 on Mon 30 Nov"."""
    if opening is None:
        return "as soon as we're back"
    when = day(opening.date(), local_now.date())
    return f"from {opening:%H:%M} {when}" if when in ("today", "tomorrow") else f"from {opening:%H:%M} on {when}"


def summary_line(order: Order, found: Sequence[Parcel]) -> str:
    statuses = ", ".join(f"{p.shipment.carrier.code} {p.shipment.tracking_number}: {p.state.status}" for p in found)
    return f"{order.number} ({order.value} {order.currency}); {statuses or 'not shipped'}"

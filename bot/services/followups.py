"""Answers to the follow-up questions about one order (bot.domain.questions), from the store and the policies.

Each answer is short: it answers the question first ("Yes, it should", "No",
"I'm afraid so"), gives the fact it rests on, and ends with what happens next
when there is something to do.  A question that does not fit the parcel's
situation ("do I pay duties?" for a parcel that is not at customs) is answered
for the situation it is in.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.config import Settings
from bot.domain.enums import (
    AddressChangeState,
    AddressMode,
    ClaimOutcome,
    DelayReason,
    HandoffReason,
    ResolutionKind,
    Status,
)
from bot.domain.questions import Question, Topic
from bot.domain.tracking import late_claim_from
from bot.services import claims
from bot.services.address import change_mode
from bot.services.answers import (
    OFFER_CLAIM,
    OFFER_HUMAN,
    Answer,
    Offer,
    Parcel,
    _Facts,
    _hold_days,
    _masked_address,
    _missed_delivery,
    _on,
    day,
    mask_address,
    moment,
    parcels,
    status_answer,
)
from bot.store.models import AddressChangeRequest, Order, Resolution
from bot.store.queries import shipment_tracking_url


@dataclass
class Reply:
    """The answers to one message's questions: texts, then the one offer that fits best."""

    messages: List[str] = field(default_factory=list)
    offer: Optional[Offer] = None

    def add(self, text: str, offer: Optional[Offer] = None) -> None:
        self.messages.append(text)
        if offer is not None and self.offer is None:
            self.offer = offer


def answer_questions(*, session: Session, order: Order, asked: Sequence[Question], settings: Settings,
                     now: dt.datetime, conversation_id: str, offer: Optional[Offer] = None,
                     after_status: bool = False) -> Reply:
    """Every question in `asked`, answered in the order it was asked.

    `offer`: what to end with when no answer brings its own (the status answer's, when it went first).
    `after_status`: the status answer was just given, so what it already says (the next step, the pickup
    point, the customs step) is not said again.
    """
    today = now.astimezone(settings.tz).date()
    found = parcels(order, settings, now)
    reply = Reply()
    main = _main(found)
    status = main.state.status if main is not None else None
    for question in asked:
        if after_status and (question.topic == Topic.NEXT_STEP or (
                question.topic == Topic.PICKUP and status == Status.AVAILABLE_FOR_PICKUP
                and not question.for_someone_else) or (
                question.topic == Topic.CUSTOMS and status == Status.EXCEPTION
                and main is not None and main.state.delay_reason == DelayReason.CUSTOMS)):
            continue
        if after_status and question.topic == Topic.PICKUP and status == Status.AVAILABLE_FOR_PICKUP:
            reply.add(_SOMEONE_ELSE)
            continue
        if question.topic == Topic.ARRIVE_BY:
            _arrive_by(reply, session, order, found, question, settings, now, today)
        elif question.topic == Topic.IS_LOST:
            _is_lost(reply, order, found, settings, now, today)
        elif question.topic == Topic.NEXT_STEP:
            _next_step(reply, order, settings, now)
        elif question.topic == Topic.PICKUP:
            _pickup(reply, order, found, question, settings, now, today)
        elif question.topic == Topic.CUSTOMS:
            _customs(reply, order, found, settings, today)
        elif question.topic == Topic.REDIRECT:
            _redirect(reply, session, order, found, today, settings.tz)
        elif question.topic == Topic.SWITCH:
            _switch(reply, session, order, question.wants, settings, now, conversation_id)
        elif question.topic == Topic.RETURN:
            _return(reply, session, order, found, settings, today)
        elif question.topic == Topic.NOT_HOME:
            _not_home(reply, order, found, settings, now, today)
        elif question.topic == Topic.NEIGHBOUR:
            _neighbour(reply, order, found, settings, now, today)
        elif question.topic == Topic.WHY:
            _why(reply, order, found, settings, now, today)
        elif question.topic == Topic.TIME:
            _time(reply, order, found, settings, now, today)
        elif question.topic == Topic.SAFE_PLACE:
            _safe_place(reply, order, found)
        elif question.topic == Topic.WAS_HOME:
            _was_home(reply, order, found, settings, today)
    if reply.offer is None:
        reply.offer = offer
    return reply


_SOMEONE_ELSE = ("Someone else can collect it for you: they need the tracking number and their own photo ID, and "
                 "some pickup points also ask for a note signed by you.")


def _main(found: Sequence[Parcel]) -> Optional[Parcel]:
    """The parcel a question about "it" means: the first one not yet delivered, else the last delivered."""
    for parcel in found:
        if parcel.state.status != Status.DELIVERED:
            return parcel
    return found[-1] if found else None


def _facts(order: Order, parcel: Parcel, settings: Settings, today: dt.date) -> _Facts:
    return _Facts(order, parcel.shipment, parcel.state, settings, today)


def _unshipped(found: Sequence[Parcel]) -> bool:
    return not found or all(p.state.status == Status.PENDING and not p.shipment.events for p in found)


def _status_gist(order: Order, settings: Settings, now: dt.datetime) -> Answer:
    return status_answer(order, settings, now, goodwill=False)


def _arrive_by(reply: Reply, session: Session, order: Order, found: Sequence[Parcel], question: Question,
               settings: Settings, now: dt.datetime, today: dt.date) -> None:
    wanted = question.by or today
    words = question.day_words or day(wanted, today)
    replacement = booked_resolution(session, order)
    if replacement is not None and replacement.kind == ResolutionKind.RESHIP:
        booked_on = _on(replacement.created_at.astimezone(settings.tz).date(), today)
        reply.add(f"The replacement for order {order.number} was booked {booked_on} "
                  "and ships within one business day; you'll get its tracking link by email, with the carrier's "
                  "date. I can't promise it for that day before it has shipped.")
        return
    if _unshipped(found):
        promised = order.promised_date
        if promised is not None and today <= promised <= wanted:
            reply.add(f"It should: order {order.number} hasn't shipped yet, but we promised delivery by "
                      f"{day(promised, today)}. You'll get a tracking link as soon as it leaves.")
        else:
            by = f" We promised delivery by {day(promised, today)}." if promised else ""
            reply.add(f"I can't promise that: order {order.number} hasn't shipped yet.{by} A colleague can check "
                      "with our warehouse when it will leave.",
                      Offer(OFFER_HUMAN, handoff_reason=HandoffReason.DELIVERY_PROBLEM.value))
        return
    parcel = _main(found)
    assert parcel is not None
    state, facts = parcel.state, _facts(order, parcel, settings, today)
    carrier = facts.carrier
    if state.status == Status.DELIVERED and state.delivered_on is not None:
        reply.add(f"It's already been delivered: {carrier} delivered it {day(state.delivered_on, today)}. If you "
                  "can't find it, check with your neighbours and around your door, then tell me.")
        return
    if state.status == Status.AVAILABLE_FOR_PICKUP:
        _pickup(reply, order, found, Question(Topic.PICKUP), settings, now, today,
                lead="It's already there to collect.")
        return
    if state.presumed_lost or state.status == Status.RETURNED_TO_SENDER or (
            state.status == Status.EXCEPTION and state.delay_reason == DelayReason.DAMAGED):
        gist = _status_gist(order, settings, now)
        reply.add(f"I'm afraid it won't arrive {words}. " + _gist(gist) +
                  (f" {gist.steps}" if gist.steps else ""), gist.offer)
        return
    eta = facts.eta
    if state.status == Status.FAILED_ATTEMPT:
        reply.add(f"Only if it's redelivered or collected by then: {carrier} already tried once. "
                  f"{_missed_delivery(parcel.shipment)}")
        return
    if eta is not None and not state.stalled:
        if eta <= wanted:
            reply.add(f"It should: {carrier} expects to deliver it {day(eta, today)}, so {words} looks fine. "
                      "I'll be honest though: carriers' dates can still slip.")
        else:
            gist = _status_gist(order, settings, now)
            reply.add(f"Probably not, I'm sorry: {carrier} expects to deliver it {day(eta, today)}, which is "
                      f"later than {words.split(' ', 1)[-1]}." + (f" {gist.steps}" if gist.steps else ""), gist.offer)
        return
    promised = facts.promised
    if state.stalled:
        gist = _status_gist(order, settings, now)
        reply.add(f"I can't promise that: {facts.quiet()}, so I can't say when it will come. "
                  + (gist.steps or ""), gist.offer)
        return
    if promised is not None and today <= promised <= wanted:
        reply.add(f"It should: we promised it by {day(promised, today)} and {carrier} hasn't reported a problem, "
                  f"though they haven't given a delivery date yet.")
    else:
        reply.add(f"I can't promise that: {carrier} hasn't given a delivery date yet"
                  + (f", and the date we promised was {day(promised, today)}." if promised else "."))


def _is_lost(reply: Reply, order: Order, found: Sequence[Parcel], settings: Settings, now: dt.datetime,
             today: dt.date) -> None:
    if _unshipped(found):
        reply.add(f"No: order {order.number} hasn't left our warehouse yet, so it can't have been lost.")
        return
    parcel = _main(found)
    assert parcel is not None
    state, facts = parcel.state, _facts(order, parcel, settings, today)
    gist = _status_gist(order, settings, now)
    if state.presumed_lost:
        reply.add("I'm afraid so. " + _gist(gist) + (f" {gist.steps}" if gist.steps else ""),
                  gist.offer)
        return
    if state.status == Status.DELIVERED and state.delivered_on is not None:
        reply.add(f"It isn't lost as far as {facts.carrier} knows: they delivered it {day(state.delivered_on, today)}. "
                  + (gist.steps or ""), gist.offer)
        return
    if state.stalled:
        # The same day the status answer names: the first day a late or lost claim fits.
        opens = late_claim_from(state, settings.policy)
        when = f" If it still isn't with you {_on(opens, today)}, we'll refund or replace it." \
            if opens is not None and opens > today else ""
        reply.add(f"Not as far as we know, but {facts.quiet()[0].lower()}{facts.quiet()[1:]}.{when} A colleague "
                  f"can ask {facts.carrier} to trace it now.",
                  Offer(OFFER_HUMAN, handoff_reason=HandoffReason.DELIVERY_PROBLEM.value))
        return
    scan = state.last_scan
    seen = ""
    if scan is not None:
        place = f" in {scan.location}" if scan.location else ""
        seen = f": {facts.carrier} last scanned it{facts.at(scan)}{place}"
    eta = facts.eta
    expects = f" {facts.carrier} expects to deliver it {day(eta, today)}." if eta is not None else ""
    reply.add(f"No, it isn't lost{seen}.{expects}", gist.offer
              if gist.offer is not None and gist.offer.response == OFFER_CLAIM else None)


def _gist(answer: Answer) -> str:
    """The first parcel's situation in the status answer, without its label, last scan and tracking link."""
    first = answer.messages[0]
    first = first.split(" Last scan: ")[0].split(" Tracking: ")[0]
    if first.startswith("Order ") and ": " in first:
        first = first.split(": ", 1)[1]
    elif first.startswith("Order "):
        first = "It " + first.split(" ", 2)[2]
    return first[:1].upper() + first[1:]


def _next_step(reply: Reply, order: Order, settings: Settings, now: dt.datetime) -> None:
    gist = _status_gist(order, settings, now)
    if gist.steps:
        reply.add(gist.steps, gist.offer)
    else:
        reply.add(f"There's nothing you need to do. {_gist(gist)}")


def _pickup(reply: Reply, order: Order, found: Sequence[Parcel], question: Question, settings: Settings,
            now: dt.datetime, today: dt.date, lead: str = "") -> None:
    parcel = _main(found)
    someone = f" {_SOMEONE_ELSE}" if question.for_someone_else else ""
    if parcel is None or _unshipped(found):
        reply.add(f"Order {order.number} hasn't shipped yet, so there's nothing to collect.")
        return
    state, shipment = parcel.state, parcel.shipment
    carrier = shipment.carrier.name
    if state.status == Status.AVAILABLE_FOR_PICKUP:
        scan = state.status_scan
        where = scan.location if scan is not None and scan.location else f"a {carrier} pickup point"
        arrived = scan.occurred_at.astimezone(settings.tz).date() if scan is not None else today
        until = arrived + dt.timedelta(days=_hold_days(shipment, settings))
        keep = (f" They keep it until {day(until, today)}." if until >= today else
                f" They were keeping it until {day(until, today)}, so it may be on its way back to us; if it comes "
                "back, we'll send it again or refund you.")
        reply.add(f"{lead + ' ' if lead else ''}It's at {where}.{keep} Bring photo ID and the tracking number, "
                  f"{shipment.tracking_number}.{someone}")
        return
    if state.status == Status.FAILED_ATTEMPT:
        reply.add(f"{carrier} couldn't deliver it. {_missed_delivery(shipment)}{someone}")
        return
    if state.status == Status.DELIVERED and state.delivered_on is not None:
        reply.add(f"There's nothing to collect: {carrier} delivered it {day(state.delivered_on, today)}.")
        return
    gist = _status_gist(order, settings, now)
    reply.add(f"It isn't at a pickup point. {_gist(gist)}"
              + (" If it goes to one, the tracking link will say where." if not someone else someone))


def _customs(reply: Reply, order: Order, found: Sequence[Parcel], settings: Settings, today: dt.date) -> None:
    duties = settings.policy.duties
    held = [p for p in found if p.state.status == Status.EXCEPTION and p.state.delay_reason == DelayReason.CUSTOMS]
    if not held:
        reply.add(f"Order {order.number} isn't held at customs. {duties}")
        return
    carrier = held[0].shipment.carrier.name
    eta = held[0].state.eta
    when = f" {carrier} still expects to deliver it {day(eta, today)}." if eta is not None and eta >= today else ""
    reply.add(f"It's at customs because parcels that cross a border are checked before they can go on; that's "
              f"routine, and {carrier} delivers it once it's cleared.{when} {duties}")


def _redirect(reply: Reply, session: Session, order: Order, found: Sequence[Parcel], today: dt.date,
              tz: dt.tzinfo) -> None:
    latest = latest_address_change(session, order)
    current = _masked_address(order)
    if latest is None or latest.state == AddressChangeState.REFUSED:
        reply.add(f"There's no address change on order {order.number}: it's going to {current}. "
                  "If you'd like to change it, just ask.")
        return
    new = latest.new_address
    masked = mask_address(new.get("line1", ""), new.get("postcode", ""), new.get("city", ""))
    masked = f"{masked}, {new.get('country', '')}"
    when = day(latest.created_at.astimezone(tz).date(), today)
    if latest.state == AddressChangeState.APPLIED:
        changed_on = _on(latest.created_at.astimezone(tz).date(), today)
        reply.add(f"Yes: the address was changed {changed_on} and order {order.number} "
                  f"is going to {masked}.")
        return
    carrier = found[0].shipment.carrier.name if found else "the carrier"
    reply.add(f"Your request of {when} to redirect order {order.number} to {masked} is with {carrier}. Redirects "
              "usually take effect within a business day, and the tracking link shows the new address once they "
              "have it.")


def booked_resolution(session: Session, order: Order, *, for_update: bool = False) -> Optional[Resolution]:
    """The newest refund or replacement booked for `order`."""
    query = select(Resolution).where(Resolution.order_id == order.id).order_by(Resolution.created_at.desc(),
                                                                               Resolution.id.desc())
    return session.scalars(query.with_for_update() if for_update else query).first()


def booked_note(session: Session, order: Order, today: dt.date, tz: dt.tzinfo) -> Optional[str]:
    """A sentence about a refund or replacement already booked, for the status answer."""
    booked = booked_resolution(session, order)
    if booked is None:
        return None
    when = _on(booked.created_at.astimezone(tz).date(), today)
    if booked.kind == ResolutionKind.REFUND:
        return (f"A refund of {booked.amount} {booked.currency} was booked {when}; it usually shows within 3-5 "
                "business days.")
    if booked.kind == ResolutionKind.RESHIP:
        return f"A replacement was booked {when}; it ships within one business day, with a new tracking link."
    return f"A credit was booked {when}."


def latest_address_change(session: Session, order: Order) -> Optional[AddressChangeRequest]:
    return session.scalars(select(AddressChangeRequest).where(AddressChangeRequest.order_id == order.id)
                           .order_by(AddressChangeRequest.created_at.desc(), AddressChangeRequest.id.desc())).first()


def pending_redirect(session: Session, order: Order, today: dt.date, tz: dt.tzinfo) -> Optional[str]:
    """A sentence about a redirect the carrier has not carried out yet, for the status answer."""
    latest = latest_address_change(session, order)
    if latest is None or latest.kind != AddressMode.REDIRECT or latest.state != AddressChangeState.REQUESTED:
        return None
    new = latest.new_address
    masked = mask_address(new.get("line1", ""), new.get("postcode", ""), new.get("city", ""))
    asked = _on(latest.created_at.astimezone(tz).date(), today)
    return (f"You asked {asked} to redirect it to {masked}; redirects usually take effect within a business day.")


def _switch(reply: Reply, session: Session, order: Order, wants: str, settings: Settings, now: dt.datetime,
            conversation_id: str) -> None:
    booked = booked_resolution(session, order, for_update=True)
    if booked is None:
        reason = claims.guess_reason(order, settings, now)
        decision = claims.decide(session=session, order=order, reason=reason, settings=settings, now=now) \
            if reason else None
        if decision is not None and decision.outcome == ClaimOutcome.ELIGIBLE:
            reply.add(f"Nothing is booked for order {order.number} yet, so you can still choose.",
                      Offer(OFFER_CLAIM, claim_reason=reason))
        elif decision is not None and decision.outcome == ClaimOutcome.HUMAN:
            reply.add(f"Nothing is booked for order {order.number} yet. A colleague will sort out a refund or a "
                      "replacement with you.", Offer(OFFER_HUMAN, handoff_reason=str(decision.human_reason)))
        else:
            gist = _status_gist(order, settings, now)
            reply.add(f"Nothing is booked for order {order.number}, and it can't have a refund or a replacement "
                      "yet. " + (gist.steps or _gist(gist)), gist.offer)
        return
    if wants and booked.kind == wants:
        what = (f"a refund of {booked.amount} {booked.currency}" if booked.kind == ResolutionKind.REFUND
                else "a replacement")
        reply.add(f"That's what you have: {what} for order {order.number} was booked "
                  f"{_on(booked.created_at.astimezone(settings.tz).date(), now.astimezone(settings.tz).date())}.")
        return
    switched = claims.switch_resolution(session=session, order=order, resolution=booked, settings=settings, now=now,
                                 conversation_id=conversation_id)
    if switched:
        if booked.kind == ResolutionKind.REFUND:
            reply.add(f"Done: instead of the replacement, a refund of {booked.amount} {booked.currency} for order "
                      f"{order.number} is on its way to your original payment method. It usually shows within 3-5 "
                      "business days.")
        else:
            reply.add(f"Done: instead of the refund, a replacement for order {order.number} is booked and ships "
                      "within one business day. You'll get a new tracking link by email.")
        return
    what = "refund" if booked.kind == ResolutionKind.REFUND else "replacement"
    today = now.astimezone(settings.tz).date()
    booked_on = _on(booked.created_at.astimezone(settings.tz).date(), today)
    reply.add(f"The {what} for order {order.number} was booked {booked_on} and is "
              "already being carried out, so I can't change it myself. A colleague can see what's still possible.",
              Offer(OFFER_HUMAN, handoff_reason=HandoffReason.RESOLUTION_CHANGE.value))


def _return(reply: Reply, session: Session, order: Order, found: Sequence[Parcel], settings: Settings,
            today: dt.date) -> None:
    days = settings.policy.return_days
    offer = Offer(OFFER_HUMAN, handoff_reason=HandoffReason.RETURN.value)
    booked = booked_resolution(session, order)
    if booked is not None:
        what = "refund" if booked.kind == ResolutionKind.REFUND else "replacement"
        booked_on = _on(booked.created_at.astimezone(settings.tz).date(), today)
        reply.add(f"A {what} for order {order.number} was booked {booked_on}. A colleague "
                  f"can cancel it or sort out a return with you.", offer)
        return
    collected = [p for p in found if p.state.status not in (Status.PENDING, Status.INFO_RECEIVED)]
    if found and not collected:
        reply.add(f"The carrier hasn't collected order {order.number} from us yet, so it may still be stopped. "
                  "A colleague can cancel it for you and refund you in full.", offer)
        return
    if _unshipped(found):
        reply.add(f"Order {order.number} hasn't shipped yet, so it can still be cancelled. A colleague can cancel "
                  "it for you and refund you in full.", offer)
        return
    delivered = [p.state.delivered_on for p in found if p.state.delivered_on is not None]
    if delivered and len(delivered) == len(found):
        until = max(delivered) + dt.timedelta(days=days)
        if until >= today:
            reply.add(f"You can send it back for a refund until {day(until, today)} ({days} days after delivery). "
                      "A colleague can send you the return label.", offer)
        else:
            reply.add(f"The {days}-day return period for order {order.number} ended {_on(until, today)}, but a "
                      "colleague can see what's possible.", offer)
        return
    reply.add(f"It's already on its way, so it can't be stopped now. Once it arrives you can send it back for a "
              f"refund within {days} days; a colleague can send you the return label.", offer)


def _not_home(reply: Reply, order: Order, found: Sequence[Parcel], settings: Settings, now: dt.datetime,
              today: dt.date) -> None:
    """Nobody in on the day: the carrier's ways to get it another day or elsewhere, and a redirect if possible."""
    parcel = _main(found)
    if parcel is None or _unshipped(found):
        reply.add(f"Order {order.number} hasn't shipped yet. If you'll be away, I can still change the delivery "
                  "address: just ask.")
        return
    state, shipment = parcel.state, parcel.shipment
    carrier = shipment.carrier.name
    if state.status == Status.DELIVERED:
        reply.add(f"{carrier} already delivered it {day(state.delivered_on or today, today)}.")
        return
    if state.status == Status.AVAILABLE_FOR_PICKUP:
        _pickup(reply, order, found, Question(Topic.PICKUP), settings, now, today,
                lead="It's waiting at a pickup point, so you can collect it when you're back.")
        return
    mode = change_mode(order, settings, now).kind
    elsewhere = (" I can also change the delivery address (to your work, say): just ask." if mode == AddressMode.DIRECT
                 else f" I can also ask {carrier} to deliver it to another address: just ask."
                 if mode == AddressMode.REDIRECT else "")
    reply.add(f"If nobody's in, {carrier} leaves a card or a message and you can choose another day or a pickup: "
              f"{_missed_delivery(shipment)}{elsewhere}")


def _neighbour(reply: Reply, order: Order, found: Sequence[Parcel], settings: Settings, now: dt.datetime,
               today: dt.date) -> None:
    """Can someone else take it in: yes, with what the carrier leaves to say who has it."""
    parcel = _main(found)
    if parcel is not None and parcel.state.status == Status.AVAILABLE_FOR_PICKUP:
        _pickup(reply, order, found, Question(Topic.PICKUP, for_someone_else=True), settings, now, today)
        return
    carrier = parcel.shipment.carrier.name if parcel is not None else "The carrier"
    reply.add(f"Yes: anyone at the address can take it in and sign for it, and if nobody's in, {carrier} may leave it "
              "with a neighbour and leave you a card or a message saying who has it.")


def _why(reply: Reply, order: Order, found: Sequence[Parcel], settings: Settings, now: dt.datetime,
         today: dt.date) -> None:
    """Why it was sent back, lost, held or late: the carrier's reason when they gave one, and what happens next."""
    parcel = _main(found)
    gist = _status_gist(order, settings, now)
    if parcel is None or _unshipped(found):
        reply.add(_gist(gist))
        return
    state, facts = parcel.state, _facts(order, parcel, settings, today)
    carrier = facts.carrier
    reason = facts.reason
    if state.status == Status.RETURNED_TO_SENDER:
        why = (f"{carrier} sent it back because of {reason}." if reason else
               f"{carrier} didn't tell us why they sent it back.")
    elif state.presumed_lost:
        why = (f"{carrier} hasn't told us what happened to it; carriers rarely know where a parcel went missing. "
               + _gist(gist))
    elif reason:
        why = f"{carrier} reported {reason}."
    else:
        why = f"{carrier} hasn't given a reason. {_gist(gist)}"
    reply.add(why + (f" {gist.steps}" if gist.steps else ""), gist.offer)


def _time(reply: Reply, order: Order, found: Sequence[Parcel], settings: Settings, now: dt.datetime,
          today: dt.date) -> None:
    """What time: carriers give us no time slot; their tracking page shows one when they have it."""
    parcel = _main(found)
    if parcel is None or _unshipped(found):
        reply.add(f"Order {order.number} hasn't shipped yet, so there's no delivery time yet.")
        return
    carrier = parcel.shipment.carrier.name
    scan = parcel.state.status_scan
    if parcel.state.status == Status.DELIVERED and scan is not None:
        place = f" in {scan.location}" if scan.location else ""
        reply.add(f"{carrier} scanned it as delivered {moment(scan.occurred_at, settings, today)}{place}. "
                  "They don't tell us who took it in.")
        return
    when = ""
    if parcel.state.status == Status.OUT_FOR_DELIVERY:
        when = " It's out for delivery today."
    elif parcel.state.eta is not None and parcel.state.eta >= today:
        when = f" {carrier} expects to deliver it {day(parcel.state.eta, today)}."
    reply.add(f"{carrier} doesn't give us a time slot, I'm afraid.{when} Their tracking page shows a time window if "
              f"they have one: {shipment_tracking_url(parcel.shipment)}")


def _safe_place(reply: Reply, order: Order, found: Sequence[Parcel]) -> None:
    """"Can they leave it in the garden?": only the carrier takes such instructions, on their own page."""
    parcel = _main(found)
    if parcel is None or _unshipped(found):
        reply.add(f"Order {order.number} hasn't shipped yet. Once it has, the carrier's tracking page lets you choose "
                  "how it's delivered.")
        return
    shipment = parcel.shipment
    reply.add(f"I can't give the driver instructions from here: {shipment.carrier.name} takes them on their tracking "
              f"page ({shipment_tracking_url(shipment)}), where you can choose a safe place or another day if they "
              "offer it.")


def _was_home(reply: Reply, order: Order, found: Sequence[Parcel], settings: Settings, today: dt.date) -> None:
    """"I was home all day": sorry, a colleague can take it up with the carrier, and how to get it meanwhile."""
    parcel = _main(found)
    if parcel is None or parcel.state.status != Status.FAILED_ATTEMPT:
        reply.add("I'm sorry about that. A colleague can take it up with the carrier.",
                  Offer(OFFER_HUMAN, handoff_reason=HandoffReason.DELIVERY_PROBLEM.value))
        return
    facts = _facts(order, parcel, settings, today)
    reply.add(f"I'm sorry: {facts.carrier} says they tried{facts.at(parcel.state.status_scan)}. If you were in, a "
              f"colleague can raise it with {facts.carrier}. To get it meanwhile: {_missed_delivery(parcel.shipment)}",
              Offer(OFFER_HUMAN, handoff_reason=HandoffReason.DELIVERY_PROBLEM.value))

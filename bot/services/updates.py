"""Proactive updates: the live tracking feed, shoppers' consent, and the outbox of messages.

* :func:`ingest_aftership` and :func:`ingest_own_events` store what a signed
  feed reports (each event once, a repeated webhook changing nothing) and
  queue the messages it is worth, in the same transaction, so a restart
  between storing and sending loses nothing;
* :func:`subscribe` and :func:`unsubscribe` record a shopper's consent, per
  conversation and order; nobody is messaged without it;
* :func:`plan` turns a parcel's state into at most one queued message per
  subscribed conversation and change (:mod:`bot.domain.updates` decides which
  changes count), keeping quiet hours;
* :func:`claim_due`, :func:`prepare` and :func:`finish` are the outbox: a
  message is claimed by one process (a conditional UPDATE, as for inbound
  channel messages), checked again just before it goes (the shopper stopped
  the updates, a newer change overtook it, the daily cap), and closed with how
  it went;
* :func:`sweep` finds the parcels that went quiet, which no event announces.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from pydantic import ValidationError
from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.config import Settings
from bot.domain.aftership import FeedUpdate
from bot.domain.carriers import FINAL_STATUSES
from bot.domain.enums import FeedSource, NoticeKind, NoticeState
from bot.domain.updates import STATUS_KINDS, Notice, notice_for, parse_quiet_hours, release_time, shop_day_start
from bot.store.importer import EventRowIn, as_aware, describe_errors
from bot.store.models import FeedReceipt, Notification, Shipment, TrackingEvent, UpdateSubscription
from bot.store.queries import EventIn, add_events, get_order, get_shipment, shipment_state, shipment_tracking_url

#: How long a claim keeps a message from other processes.
CLAIM_LEASE = dt.timedelta(seconds=60)
#: Conversations that may follow one order at once; a newer consent ends the oldest.
MAX_SUBSCRIPTIONS_PER_ORDER = 5
#: Sending attempts before a message counts as failed.
MAX_ATTEMPTS = 5
#: The feed's estimate: (the day, the earliest, the latest), each of them possibly unknown.
Window = Tuple[Optional[dt.date], Optional[dt.date], Optional[dt.date]]


class FeedRejected(ValueError):
    """A feed body that cannot be used; `problems` names every bad part."""

    def __init__(self, problems: List[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass
class FeedResult:
    """What one webhook call did."""

    duplicate: bool = False
    known: int = 0
    unknown: List[str] = field(default_factory=list)
    events_stored: int = 0
    queued: int = 0

    def to_json(self) -> Dict[str, Any]:
        return {"duplicate": self.duplicate, "shipments": self.known, "unknown_tracking_numbers": self.unknown,
                "events_stored": self.events_stored, "updates_queued": self.queued}


# --- consent ------------------------------------------------------------------------------------


def subscribe(*, session: Session, conversation_id: str, channel: str, order_number: str, settings: Settings,
              now: dt.datetime) -> bool:
    """Record consent to updates about `order_number` on this conversation; False if it was already given.

    What the shopper was just told is recorded as told (state ``skipped``), so
    the first update is a real change, not a repeat of the answer they have.
    """
    row = session.scalars(select(UpdateSubscription).where(
        UpdateSubscription.conversation_id == conversation_id,
        UpdateSubscription.order_number == order_number)).first()
    if row is not None and row.ended_at is None:
        return False
    if row is None:
        row = UpdateSubscription(conversation_id=conversation_id, channel=channel, order_number=order_number,
                                 created_at=now)
        session.add(row)
    else:
        row.ended_at, row.channel, row.created_at = None, channel, now
    session.flush()
    # One order is followed from a few conversations at most (the widget on two devices, WhatsApp): beyond
    # MAX_SUBSCRIPTIONS_PER_ORDER the oldest consent ends, so a flood of conversations cannot make every
    # carrier event for the order write hundreds of messages.
    followers = list(session.scalars(select(UpdateSubscription).where(
        UpdateSubscription.order_number == order_number, UpdateSubscription.ended_at.is_(None))
        .order_by(UpdateSubscription.created_at.desc(), UpdateSubscription.id.desc())))
    for old in followers[MAX_SUBSCRIPTIONS_PER_ORDER:]:
        unsubscribe(session=session, conversation_id=old.conversation_id, order_number=order_number, now=now)
    order = get_order(session=session, number=order_number)
    for shipment in order.shipments if order else ():
        notice = notice_for(shipment_state(shipment, settings=settings, now=now),
                            notify_delivered=settings.notify_delivered)
        if notice is not None:
            _insert(session, row, shipment, notice, due_at=now, now=now, state=NoticeState.SKIPPED,
                    outcome="already told in the conversation when the shopper subscribed")
    return True


def unsubscribe(*, session: Session, conversation_id: str, order_number: Optional[str], now: dt.datetime) -> List[str]:
    """End consent for `order_number` (every order when None); returns the orders whose updates stopped.

    Messages already queued for them are skipped.
    """
    query = select(UpdateSubscription).where(UpdateSubscription.conversation_id == conversation_id,
                                             UpdateSubscription.ended_at.is_(None))
    if order_number:
        query = query.where(UpdateSubscription.order_number == order_number)
    stopped = []
    for row in session.scalars(query):
        row.ended_at = now
        stopped.append(row.order_number)
        session.execute(update(Notification)
                        .where(Notification.subscription_id == row.id, Notification.state == NoticeState.QUEUED.value)
                        .values(state=NoticeState.SKIPPED.value, outcome="the shopper stopped the updates")
                        .execution_options(synchronize_session=False))
    session.flush()
    return stopped


def followed_before(*, session: Session, conversation_id: str, order_number: str) -> bool:
    """Whether this conversation once had updates about the order and stopped them."""
    return session.scalar(select(func.count()).select_from(UpdateSubscription).where(
        UpdateSubscription.conversation_id == conversation_id, UpdateSubscription.order_number == order_number,
        UpdateSubscription.ended_at.is_not(None))) > 0


def subscriptions(*, session: Session, conversation_id: str) -> List[str]:
    """The orders this conversation gets updates about."""
    return list(session.scalars(select(UpdateSubscription.order_number).where(
        UpdateSubscription.conversation_id == conversation_id, UpdateSubscription.ended_at.is_(None))
        .order_by(UpdateSubscription.id)))


# --- planning -----------------------------------------------------------------------------------


def _insert(session: Session, subscription: UpdateSubscription, shipment: Shipment, notice: Notice, *,
            due_at: dt.datetime, now: dt.datetime, state: NoticeState = NoticeState.QUEUED,
            outcome: str = "") -> Optional[Notification]:
    row = Notification(subscription_id=subscription.id, conversation_id=subscription.conversation_id,
                       channel=subscription.channel, order_number=subscription.order_number,
                       shipment_id=shipment.id, kind=notice.kind.value, change_key=notice.key[:120],
                       facts=dict(notice.facts), state=state.value, created_at=now, due_at=due_at,
                       outcome=outcome, messages=[])
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        return None  # this change is already queued or told for this conversation
    return row


def plan(*, session: Session, shipment: Shipment, settings: Settings, now: dt.datetime) -> List[Notification]:
    """Queue the message the parcel's current state is worth, once per subscribed conversation and change."""
    subscribers = list(session.scalars(select(UpdateSubscription).where(
        UpdateSubscription.order_number == shipment.order.number, UpdateSubscription.ended_at.is_(None))))
    if not subscribers:
        return []
    state = shipment_state(shipment, settings=settings, now=now)
    notice = notice_for(state, notify_delivered=settings.notify_delivered)
    if notice is None:
        return []
    due_at = release_time(now, parse_quiet_hours(settings.notify_quiet_hours), settings.tz)
    queued = []
    for subscription in subscribers:
        if notice.kind in STATUS_KINDS:
            last_kind = session.scalar(select(Notification.kind).where(
                Notification.conversation_id == subscription.conversation_id,
                Notification.shipment_id == shipment.id).order_by(Notification.id.desc()).limit(1))
            if last_kind == notice.kind.value:
                continue  # never the same status twice in a row
        row = _insert(session, subscription, shipment, notice, due_at=due_at, now=now)
        if row is not None:
            queued.append(row)
    return queued


def sweep(*, session: Session, settings: Settings, now: dt.datetime) -> int:
    """Queue updates for subscribed parcels whose state changed with time alone (stalled, presumed lost)."""
    numbers = set(session.scalars(select(UpdateSubscription.order_number).where(UpdateSubscription.ended_at.is_(None))))
    queued = 0
    for number in sorted(numbers):
        order = get_order(session=session, number=number)
        for shipment in order.shipments if order else ():
            if shipment.status not in FINAL_STATUSES:
                queued += len(plan(session=session, shipment=shipment, settings=settings, now=now))
    return queued


# --- the feeds ----------------------------------------------------------------------------------


def _receipt(session: Session, source: FeedSource, event_id: str, now: dt.datetime, *, tracking_number: str = "",
             carrier: Optional[str] = None, tag: str = "") -> Optional[FeedReceipt]:
    row = FeedReceipt(source=source.value, event_id=event_id[:120], received_at=now,
                      tracking_number=tracking_number[:64], carrier=carrier, tag=tag[:40], known=False, events_stored=0)
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        return None
    return row


def _find_shipment(session: Session, carrier: Optional[str], tracking_number: str) -> Optional[Shipment]:
    if carrier:
        found = get_shipment(session=session, carrier_code=carrier, tracking_number=tracking_number)
        if found is not None:
            return found
    matches = list(session.scalars(select(Shipment).where(
        func.upper(Shipment.tracking_number) == tracking_number.strip().upper()).limit(2)))
    return matches[0] if len(matches) == 1 else None


def _store(session: Session, shipment: Shipment, events: Sequence[EventIn], settings: Settings, now: dt.datetime,
           result: FeedResult, *, estimate: Optional[Window] = None) -> None:
    stored = add_events(session=session, shipment=shipment, events=events) if events else 0
    changed = stored > 0
    if estimate is not None:
        on, earliest, latest = estimate
        if (shipment.eta_earliest, shipment.eta_latest) != (earliest, latest):
            shipment.eta_earliest, shipment.eta_latest = earliest, latest
            changed = True
        day = on or latest
        newest = session.scalars(select(TrackingEvent).where(TrackingEvent.shipment_id == shipment.id)
                                 .order_by(TrackingEvent.occurred_at.desc(), TrackingEvent.id.desc()).limit(1)).first()
        if day is not None and newest is not None and newest.estimated_delivery != day:
            newest.estimated_delivery = day
            session.flush()
            session.expire(shipment, ["events"])
            changed = True
    result.events_stored += stored
    result.known += 1
    if changed:
        result.queued += len(plan(session=session, shipment=shipment, settings=settings, now=now))


def ingest_aftership(*, session: Session, update: FeedUpdate, settings: Settings, now: dt.datetime) -> FeedResult:
    """Store one AfterShip webhook (once per event id) and queue the updates it is worth."""
    result = FeedResult()
    receipt = _receipt(session, FeedSource.AFTERSHIP, update.event_id, now, tracking_number=update.tracking_number,
                       carrier=update.carrier, tag=update.tag or "")
    if receipt is None:
        result.duplicate = True
        return result
    shipment = _find_shipment(session, update.carrier, update.tracking_number)
    if shipment is None:
        result.unknown.append(update.tracking_number)
        return result
    receipt.known = True
    events = [EventIn(occurred_at=c.occurred_at, raw_code=c.raw_code, raw_text=c.text, location=c.location,
                      event_id=c.event_id) for c in update.checkpoints]
    estimate = None
    if update.estimate is not None:
        estimate = (update.estimate.on, update.estimate.earliest, update.estimate.latest)
    _store(session, shipment, events, settings, now, result, estimate=estimate)
    receipt.events_stored = result.events_stored
    return result


def ingest_own_events(*, session: Session, body: bytes, settings: Settings, now: dt.datetime) -> FeedResult:
    """Store a batch in the project's own event format: ``{"events": [...]}`` as `import events` reads.

    Every row is checked first; one bad row refuses the batch (nothing stored)
    with every problem named.  Rows for tracking numbers the store does not
    know are recorded and left out; a batch sent again changes nothing.
    """
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FeedRejected([f"the body is not UTF-8 JSON ({exc})"]) from None
    if isinstance(data, dict) and isinstance(data.get("events"), list):
        records = data["events"]
    elif isinstance(data, list):
        records = data
    else:
        raise FeedRejected(["expected {\"events\": [...]} or a JSON list of events"])
    if not records:
        raise FeedRejected(["the batch has no events"])
    problems: List[str] = []
    rows: List[EventRowIn] = []
    for index, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            problems.append(f"event {index}: expected an object")
            continue
        try:
            rows.append(EventRowIn(**record))
        except ValidationError as exc:
            problems += describe_errors(f"event {index}", exc)
    for index, row in enumerate(rows, start=1):
        occurred = as_aware(row.occurred_at, settings.tz)
        if occurred is not None and occurred > now + dt.timedelta(hours=1):
            problems.append(f"event {index}, field occurred_at: in the future")
    if problems:
        raise FeedRejected(problems)
    result = FeedResult()
    batch_id = hashlib.sha256(body).hexdigest()[:64]
    if _receipt(session, FeedSource.OWN, batch_id, now, tracking_number=rows[0].tracking_number,
                carrier=rows[0].carrier, tag=f"{len(rows)} events") is None:
        result.duplicate = True
        return result
    grouped: Dict[Tuple[str, str], List[EventRowIn]] = {}
    for row in rows:
        grouped.setdefault((row.carrier, row.tracking_number), []).append(row)
    for (carrier, number), group in grouped.items():
        shipment = get_shipment(session=session, carrier_code=carrier, tracking_number=number)
        if shipment is None:
            result.unknown.append(number)
            continue
        events = [EventIn(occurred_at=as_aware(r.occurred_at, settings.tz), raw_code=r.code,  # type: ignore[arg-type]
                          raw_text=r.description, location=r.location, event_id=r.event_id,
                          estimated_delivery=r.estimated_delivery) for r in group]
        _store(session, shipment, events, settings, now, result)
    return result


# --- the outbox ---------------------------------------------------------------------------------


def claim_due(*, session: Session, now: dt.datetime, lease: dt.timedelta = CLAIM_LEASE, limit: int = 50) -> List[int]:
    """Claim queued messages that are due and held by nobody; the caller commits, then sends them."""
    free = (Notification.state == NoticeState.QUEUED.value, Notification.due_at <= now,
            or_(Notification.claimed_at.is_(None), Notification.claimed_at < now - lease))
    candidates = list(session.scalars(select(Notification.id).where(*free)
                                      .order_by(Notification.due_at, Notification.id).limit(limit)))
    claimed = []
    for row_id in candidates:
        won = session.execute(update(Notification).where(Notification.id == row_id, *free)
                              .values(claimed_at=now, attempts=Notification.attempts + 1)
                              .execution_options(synchronize_session=False))
        if won.rowcount == 1:
            claimed.append(row_id)
    return claimed


@dataclass(frozen=True)
class Outgoing:
    """A claimed message, checked and ready for its channel."""

    id: int
    conversation_id: str
    channel: str
    order_number: str
    kind: str
    facts: Dict[str, Any]
    attempts: int


def prepare(*, session: Session, notification_id: int, settings: Settings, now: dt.datetime) -> Optional[Outgoing]:
    """The message to send, or None after closing it as skipped (consent ended, overtaken, daily cap)."""
    row = session.get(Notification, notification_id)
    if row is None or row.state != NoticeState.QUEUED.value:
        return None
    subscription = session.get(UpdateSubscription, row.subscription_id)
    reason = None
    if subscription is None or subscription.ended_at is not None:
        reason = "the shopper stopped the updates"
    elif session.scalar(select(func.count()).select_from(Notification).where(
            Notification.conversation_id == row.conversation_id, Notification.shipment_id == row.shipment_id,
            Notification.id > row.id, Notification.state.in_((NoticeState.QUEUED.value, NoticeState.SENT.value)))):
        reason = "overtaken by a newer update about the same parcel"
    elif sent_today(session=session, order_number=row.order_number, now=now, settings=settings,
                    conversation_id=row.conversation_id) >= settings.notify_max_per_order_per_day:
        reason = f"the daily limit of {settings.notify_max_per_order_per_day} updates for this order was reached"
    if reason:
        row.state, row.outcome, row.claimed_at = NoticeState.SKIPPED.value, reason, None
        return None
    return Outgoing(id=row.id, conversation_id=row.conversation_id, channel=row.channel,
                    order_number=row.order_number, kind=row.kind, facts=dict(row.facts or {}),
                    attempts=int(row.attempts or 0))


def sent_today(*, session: Session, order_number: str, now: dt.datetime, settings: Settings,
               conversation_id: Optional[str] = None) -> int:
    """Updates sent about `order_number` since midnight in the shop's zone, to one conversation (or all).

    The daily cap is a shopper's: what other conversations following the same
    order were sent does not use up theirs.
    """
    query = select(func.count()).select_from(Notification).where(
        Notification.order_number == order_number, Notification.state == NoticeState.SENT.value,
        Notification.sent_at >= shop_day_start(now, settings.tz))
    if conversation_id is not None:
        query = query.where(Notification.conversation_id == conversation_id)
    return int(session.scalar(query) or 0)


def finish(*, session: Session, notification_id: int, state: NoticeState, now: dt.datetime, outcome: str = "",
           messages: Iterable[Mapping[str, Any]] = ()) -> None:
    """Close a claimed message with how it went (a failure below the attempt limit goes back to the queue)."""
    row = session.get(Notification, notification_id)
    if row is None:
        return
    if state == NoticeState.FAILED and int(row.attempts or 0) < MAX_ATTEMPTS:
        row.claimed_at, row.outcome = None, outcome[:300]
        row.due_at = now + dt.timedelta(seconds=30 * int(row.attempts or 1))
        return
    row.state, row.outcome, row.claimed_at = state.value, outcome[:300], None
    if state == NoticeState.SENT:
        row.sent_at = now
        row.messages = [dict(message) for message in messages]


def unseen_for(*, session: Session, conversation_id: str) -> List[Tuple[int, List[Dict[str, Any]]]]:
    """Updates sent to a widget conversation that no open widget has shown yet: (id, messages), oldest first."""
    rows = session.scalars(select(Notification).where(
        Notification.conversation_id == conversation_id, Notification.state == NoticeState.SENT.value,
        Notification.seen_at.is_(None)).order_by(Notification.id))
    return [(row.id, list(row.messages or [])) for row in rows]


#: Ids are the table's integer keys: anything outside this range names no update.
_ID_RANGE = range(1, 2**31)


def mark_seen(*, session: Session, conversation_id: str, notification_ids: Iterable[Any], now: dt.datetime) -> int:
    """Record that the conversation's widget showed these updates (only its own; other ids are ignored)."""
    ids = sorted({i for i in notification_ids
                  if isinstance(i, int) and not isinstance(i, bool) and i in _ID_RANGE})[:100]
    if not ids:
        return 0
    result = session.execute(update(Notification).where(
        Notification.conversation_id == conversation_id, Notification.id.in_(ids), Notification.seen_at.is_(None))
        .values(seen_at=now).execution_options(synchronize_session=False))
    return result.rowcount or 0


def trigger_key(settings: Settings, notification_id: int) -> str:
    """The proof that a trigger of an update comes from the outbox, not from a shopper typing the intent.

    Anyone can type ``/EXTERNAL_tracking_update{...}`` into a chat; only the Rasa
    server and the action server know the secret this is keyed with.
    """
    secret = (settings.action_server_token or settings.rasa_auth_token or "").encode()
    return hmac.new(secret, f"update:{notification_id}".encode(), hashlib.sha256).hexdigest()[:32]


def trigger_is_genuine(settings: Settings, notification_id: int, key: Optional[str]) -> bool:
    return bool(key) and hmac.compare_digest(trigger_key(settings, notification_id), str(key))


def notification_facts(*, session: Session, notification_id: int) -> Optional[Dict[str, Any]]:
    """What the update action needs: its order, kind and facts."""
    row = session.get(Notification, notification_id)
    if row is None:
        return None
    return {"id": row.id, "conversation_id": row.conversation_id, "order_number": row.order_number,
            "shipment_id": row.shipment_id, "kind": row.kind, "facts": dict(row.facts or {}), "state": row.state}


# --- wording ------------------------------------------------------------------------------------

#: What to do next after the carrier reports each kind of problem.
_EXCEPTION_NEXT = {
    "customs": "Customs checks usually take a few days; you don't need to do anything unless the carrier "
               "contacts you about duties.",
    "address_problem": "Reply here and I'll check the delivery address with you.",
    "damaged": "If it reaches you damaged, tell me here and I'll sort out a replacement or a refund.",
}
_EXCEPTION_NEXT_DEFAULT = "I'll message you when it moves again; reply here if you'd like a person to look at it."


def wording(*, session: Session, notification_id: int, settings: Settings, now: dt.datetime
            ) -> Optional[Tuple[str, str, Dict[str, Any]]]:
    """(order number, response name, its variables) for an update, from the parcel's facts now."""
    from bot.domain.carriers import REASON_LABELS
    from bot.domain.enums import ClaimReason
    from bot.domain.eta import describe_range
    from bot.domain.tracking import claim_fits, late_claim_from
    from bot.services.answers import _hold_days, _missed_delivery, day
    from bot.services.eta import shipment_eta_range

    row = session.get(Notification, notification_id)
    if row is None:
        return None
    shipment = session.get(Shipment, row.shipment_id)
    if shipment is None:
        return None
    state = shipment_state(shipment, settings=settings, now=now)
    today = now.astimezone(settings.tz).date()
    carrier = shipment.carrier.name
    facts = dict(row.facts or {})
    reason = facts.get("reason") or state.delay_reason
    order = shipment.order
    several = len(order.shipments) > 1
    variables: Dict[str, Any] = {
        "number": row.order_number, "carrier": carrier, "link": shipment_tracking_url(shipment),
        # An order in several parcels: which one ("your UPS parcel ending 8588").
        "parcel": f"your {carrier} parcel ending {shipment.tracking_number[-4:]}" if several else "your parcel",
    }
    kind = row.kind
    if kind == NoticeKind.EXCEPTION:
        said = str(facts.get("said") or "").strip().rstrip(".")
        if reason in REASON_LABELS:
            variables["because"] = f" because of {REASON_LABELS[reason]}"
        else:
            variables["because"] = f" (they say: \"{said}\")" if said else ""
        variables["next_step"] = _EXCEPTION_NEXT.get(str(reason), _EXCEPTION_NEXT_DEFAULT)
    elif kind == NoticeKind.LATE_ESTIMATE:
        # What the shopper can do about it: the day a refund or replacement becomes possible, or that it is now.
        if claim_fits(state, ClaimReason.LATE, settings.policy, today):
            variables["next_step"] = "If you'd rather not wait, I can refund or replace it now: just ask."
        else:
            claim_from = late_claim_from(state, settings.policy)
            variables["next_step"] = (f"If it still isn't with you on {day(claim_from, today)}, tell me and we'll "
                                      "refund or replace it." if claim_from and claim_from > today else
                                      "I'll tell you if it changes again.")
        # The range the status and delay answers give too (bot.services.eta), never a day already gone.
        estimate = shipment_eta_range(session=session, shipment=shipment, settings=settings, now=now, state=state)
        if estimate is None:
            return row.order_number, "utter_update_late_no_date", variables
        variables["when"] = describe_range(estimate, today)
        promised = state.promised_date
        late_by = (estimate.latest - promised).days if promised else 0
        variables["late"] = f"up to {late_by} day{'s' if late_by != 1 else ''}" if estimate.days > 1 else \
            f"{late_by} day{'s' if late_by != 1 else ''}"
        variables["promised"] = day(promised, today) if promised else "the promised date"
    elif kind == NoticeKind.FAILED_ATTEMPT:
        variables["missed"] = _missed_delivery(shipment)
    elif kind == NoticeKind.PICKUP:
        scan = state.status_scan
        variables["place"] = scan.location if scan and scan.location else "a pickup point near you"
        if scan is not None:
            until = scan.occurred_at.astimezone(settings.tz).date() + dt.timedelta(days=_hold_days(shipment, settings))
            variables["until"] = f" until {day(until, today)}" if until >= today else ""
        else:
            variables["until"] = ""
    elif kind == NoticeKind.LOST:
        quiet = state.business_days_without_scan
        variables["lost_how"] = ("has lost track of your parcel" if state.carrier_status == "lost" or not quiet else
                                 f"hasn't scanned your parcel for {quiet} working days, so we count it as lost")
    elif kind == NoticeKind.STALLED:
        variables["days"] = state.business_days_without_scan or facts.get("quiet_days") or 0
        lost_on = state.lost_on
        variables["by"] = day(lost_on, today) if lost_on and lost_on > today else "the next few days"
    return row.order_number, f"utter_update_{kind}", variables

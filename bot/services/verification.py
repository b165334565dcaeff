"""Proving who is asking before anything is said about an order.

An order number plus one proof (the email on the order or the delivery
postcode).  A wrong proof gets the same neutral answer whether the order
exists or not, and every attempt is recorded, so guessing is slowed without
locking the real shopper out:

* a conversation stops trying after POLICY_VERIFY_MAX_FAILURES_PER_CONVERSATION
  failures (and is offered a person);
* after POLICY_VERIFY_MAX_FAILURES_PER_ORDER_HOUR failures on one order number
  from anywhere, its postcode stops counting for the hour, but the email on the
  order still proves it (a stranger cannot lock the owner out);
* after POLICY_VERIFY_MAX_FAILURES_PER_EMAIL_HOUR failures with one email
  address, shop-wide, that address proves nothing for the hour (one known
  address cannot be tried against every order number).

A shopper without the order number can find their orders with the email address
AND the delivery postcode together (:func:`look_up`): only orders that match
both are listed, and each lookup is a proof attempt under every limit above
(the conversation's, the email's and the postcode's).  Choosing an order from
the list is then checked like any other proof, with that email.

A success is recorded as a :class:`~bot.store.models.Verification` row: the
only proof the actions accept.  It lapses after VERIFICATION_TTL_MINUTES
without use and is revoked when the conversation starts a new session.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
from dataclasses import dataclass
from typing import Optional, Tuple

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from bot.domain.enums import VerifyResult
from bot.domain.parsing import compact_postcode
from bot.domain.policy import Policy
from bot.services.answers import day
from bot.store.models import Customer, Order, Verification, VerificationAttempt
from bot.store.queries import get_order, get_order_by_tracking_number

logger = logging.getLogger(__name__)

HOUR = dt.timedelta(hours=1)
#: A conversation's failures count for this long: as long as a Rasa session lasts by default.
LOCK_WINDOW = dt.timedelta(days=1)


@dataclass(frozen=True)
class Outcome:
    result: VerifyResult
    order_number: Optional[str] = None

    @property
    def verified(self) -> bool:
        return self.result == VerifyResult.VERIFIED


def email_key(email: str) -> str:
    """What the attempts table keeps of an email tried: its SHA-256, never the address."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


def postcode_key(postcode: str) -> str:
    """What the attempts table keeps of a postcode tried: the SHA-256 of its compact form."""
    return hashlib.sha256(f"postcode:{compact_postcode(postcode)}".encode()).hexdigest()


def proof_matches(order: Order, *, email: Optional[str], postcode: Optional[str]) -> bool:
    if email and order.customer.email == email.strip().lower():
        return True
    return bool(postcode) and compact_postcode(order.ship_postcode) == compact_postcode(postcode or "")


def _failures(session: Session, *conditions: object) -> int:
    query = select(func.count()).select_from(VerificationAttempt).where(VerificationAttempt.succeeded.is_(False),
                                                                          *conditions)
    return int(session.scalar(query) or 0)


def is_locked(*, session: Session, conversation_id: str, policy: Policy, now: dt.datetime) -> bool:
    """Whether this conversation has failed too often, within a day, to try again."""
    failed = _failures(session, VerificationAttempt.conversation_id == conversation_id,
                       VerificationAttempt.created_at > now - LOCK_WINDOW)
    return failed >= policy.verify_max_failures_per_conversation


def email_paused(*, session: Session, email: str, policy: Policy, now: dt.datetime) -> bool:
    """Whether this email address failed too often, shop-wide, in the last hour."""
    failed = _failures(session, VerificationAttempt.proof_key == email_key(email),
                       VerificationAttempt.created_at > now - HOUR)
    return failed >= policy.verify_max_failures_per_email_hour


def postcode_paused(*, session: Session, order_number: str, postcode: str, policy: Policy,
                    now: dt.datetime) -> bool:
    """Whether a postcode may not count as proof right now.

    Postcodes are guessable and shared by many customers, so one stops counting
    for an hour after failures on this order number, or with this postcode
    shop-wide (someone trying a common postcode against many order numbers), or
    when postcode failures shop-wide show a spray.  The email on the order
    always still works.
    """
    since = now - HOUR
    on_order = _failures(session, VerificationAttempt.order_number == order_number,
                         VerificationAttempt.created_at > since)
    if on_order >= policy.verify_max_failures_per_order_hour:
        return True
    with_postcode = _failures(session, _with_postcode(postcode), VerificationAttempt.created_at > since)
    if with_postcode >= policy.verify_max_failures_per_postcode_hour:
        return True
    shop_wide = _failures(session, VerificationAttempt.proof_kind == "postcode", VerificationAttempt.created_at > since)
    return shop_wide >= policy.verify_max_postcode_failures_shop_hour


def lookup_key(postcode: str) -> str:
    """What a lookup's attempt row keeps in place of an order number: one key per postcode tried, never the postcode."""
    return f"lookup:{postcode_key(postcode)[:32]}"


def lookup_email_key(email: str) -> str:
    """What a lookup's attempt row keeps of the email tried: a key of its own, so lookups never pause proofs."""
    return "lookup:" + email_key(email)[:56]


def _with_postcode(postcode: str) -> object:
    """Proof attempts that tried this postcode."""
    return VerificationAttempt.proof_key == postcode_key(postcode)


def lookup_paused(*, session: Session, email: str, postcode: str, policy: Policy,
                  now: dt.datetime) -> Optional[VerifyResult]:
    """Whether lookups with this email or this postcode are paused, and which; None when they are not.

    Lookups have counters of their own (the same limits as proofs): someone
    trying one email with many postcodes, one postcode with many emails, or
    spraying lookups shop-wide pauses lookups only.  The owner can still prove
    an order with its number and the email or postcode, so a stranger who
    knows an email address or shares a postcode cannot lock anyone out.
    """
    since = now - HOUR
    if _failures(session, VerificationAttempt.proof_key == lookup_email_key(email),
                 VerificationAttempt.created_at > since) >= policy.verify_max_failures_per_email_hour:
        return VerifyResult.EMAIL_PAUSED
    if _failures(session, VerificationAttempt.order_number == lookup_key(postcode),
                 VerificationAttempt.created_at > since) >= policy.verify_max_failures_per_postcode_hour:
        return VerifyResult.POSTCODE_PAUSED
    if _failures(session, VerificationAttempt.proof_kind == "lookup",
                 VerificationAttempt.created_at > since) >= policy.verify_max_postcode_failures_shop_hour:
        return VerifyResult.POSTCODE_PAUSED
    return None


def verify(*, session: Session, conversation_id: str, order_number: Optional[str] = None,
           tracking_number: Optional[str] = None, email: Optional[str] = None, postcode: Optional[str] = None,
           policy: Policy, now: dt.datetime) -> Outcome:
    """Check the proof against the store, record the attempt, and record the verification on success.

    Returns the verified order's number; or MISMATCH (never saying whether the
    order exists); LOCKED once this conversation failed too often;
    EMAIL_PAUSED when the email address is paused shop-wide; POSTCODE_PAUSED
    when a postcode was given for an order number whose postcode is paused
    (both decided by the typed number and address alone, so they reveal nothing
    about the order either).
    """
    key = order_number or (tracking_number or "").upper()
    if is_locked(session=session, conversation_id=conversation_id, policy=policy, now=now):
        return Outcome(VerifyResult.LOCKED)
    # A refused attempt is not recorded: it tells the sender nothing (right or wrong, the answer is the same),
    # and counting it would let the owner's own retries, sent while a stranger keeps a key paused, extend it.
    if email and email_paused(session=session, email=email, policy=policy, now=now):
        return Outcome(VerifyResult.EMAIL_PAUSED)
    if not email and postcode_paused(session=session, order_number=key, postcode=postcode or "", policy=policy,
                                     now=now):
        return Outcome(VerifyResult.POSTCODE_PAUSED)
    order = None
    if order_number:
        order = get_order(session=session, number=order_number)
    elif tracking_number:
        order = get_order_by_tracking_number(session=session, tracking_number=tracking_number)
    ok = order is not None and proof_matches(order, email=email, postcode=None if email else postcode)
    _record(session, conversation_id, key, ok, now, email=email, postcode=postcode, policy=policy)
    if ok:
        assert order is not None
        remember(session=session, conversation_id=conversation_id, order_number=order.number, now=now)
        return Outcome(VerifyResult.VERIFIED, order.number)
    if is_locked(session=session, conversation_id=conversation_id, policy=policy, now=now):
        logger.warning("verification: a conversation reached %d failed checks and is locked (order %s)",
                       policy.verify_max_failures_per_conversation, key)
        return Outcome(VerifyResult.LOCKED)
    return Outcome(VerifyResult.MISMATCH)


def _record(session: Session, conversation_id: str, key: str, ok: bool, now: dt.datetime, *,
            email: Optional[str], policy: Policy, postcode: Optional[str] = None, kind: Optional[str] = None) -> None:
    if kind == "lookup":
        proof: Optional[str] = lookup_email_key(email or "")
    else:
        proof = email_key(email) if email else postcode_key(postcode) if postcode else None
    session.add(VerificationAttempt(conversation_id=conversation_id, order_number=key, succeeded=ok, created_at=now,
                                    proof_kind=kind or ("email" if email else "postcode"), proof_key=proof))
    session.flush()
    if ok:
        return
    # One line per threshold crossed, for the shop's alerting: guessing shows up as these.
    since = now - HOUR
    on_order = _failures(session, VerificationAttempt.order_number == key, VerificationAttempt.created_at > since)
    if on_order == policy.verify_max_failures_per_order_hour:
        if kind == "lookup":
            logger.warning("verification: %d failed lookups with one postcode (key %s) within an hour; lookups with "
                           "it stop for the hour", on_order, key)
        else:
            logger.warning("verification: %d failed checks on order %s within an hour; its postcode no longer counts",
                           on_order, key)
    if email:
        on_email = _failures(session, VerificationAttempt.proof_key == proof, VerificationAttempt.created_at > since)
        if on_email == policy.verify_max_failures_per_email_hour:
            logger.warning("verification: %d failed checks with one email address (key %s…) within an hour; "
                           "it no longer proves anything for the hour", on_email, email_key(email)[:12])
    if postcode and not email:
        with_postcode = _failures(session, _with_postcode(postcode), VerificationAttempt.created_at > since)
        if with_postcode == policy.verify_max_failures_per_postcode_hour:
            logger.warning("verification: %d failed checks with one postcode within an hour (tried against several "
                           "orders?); it no longer counts as proof for the hour", with_postcode)
    shop_wide = _failures(session, VerificationAttempt.created_at > now - dt.timedelta(minutes=10))
    if shop_wide and shop_wide % SPIKE_SHOP_WIDE_PER_10_MIN == 0:
        logger.warning("verification: %d failed checks shop-wide in the last 10 minutes (possible guessing)",
                       shop_wide)


#: Failed checks shop-wide in ten minutes at which (and at each multiple of which) a warning is logged.
SPIKE_SHOP_WIDE_PER_10_MIN = 50

#: How many of a shopper's orders a lookup lists, newest first.
LOOKUP_LIMIT = 5


@dataclass(frozen=True)
class OrderChoice:
    """One order a lookup found, as the shopper sees it: its number, when it was placed, what was in it."""

    number: str
    placed_at: dt.datetime
    items: str


@dataclass(frozen=True)
class Lookup:
    result: VerifyResult
    orders: Tuple[OrderChoice, ...] = ()


def look_up(*, session: Session, conversation_id: str, email: str, postcode: str, policy: Policy,
            now: dt.datetime) -> Lookup:
    """The orders of the customer with this email that go to this postcode, for a shopper without the order number.

    Both must match one customer's order: an email or a postcode alone finds
    nothing, and a miss gets the same MISMATCH whichever of the two was wrong.
    The lookup is a proof attempt: it counts towards the conversation's
    lock-out and towards pauses of lookups with this email or postcode (never
    of proofs: see :func:`lookup_paused`), and is refused while any of them
    holds (LOCKED, EMAIL_PAUSED, POSTCODE_PAUSED).  It records no
    verification: the shopper then chooses an order, which :func:`verify` checks
    with this email like any other proof.
    """
    key = lookup_key(postcode)
    if is_locked(session=session, conversation_id=conversation_id, policy=policy, now=now):
        return Lookup(VerifyResult.LOCKED)
    record = functools.partial(_record, session, conversation_id, key, now=now, email=email, postcode=postcode,
                               policy=policy, kind="lookup")
    paused = lookup_paused(session=session, email=email, postcode=postcode, policy=policy, now=now)
    if paused is not None:  # refused, and not recorded (see `verify`)
        return Lookup(paused)
    customer = session.scalars(select(Customer).where(Customer.email == email.strip().lower())).first()
    wanted = compact_postcode(postcode)
    orders = sorted((o for o in (customer.orders if customer else []) if compact_postcode(o.ship_postcode) == wanted),
                    key=lambda o: o.placed_at, reverse=True)[:LOOKUP_LIMIT]
    record(bool(orders))
    if orders:
        return Lookup(VerifyResult.VERIFIED, tuple(OrderChoice(o.number, o.placed_at, item_hint(o)) for o in orders))
    if is_locked(session=session, conversation_id=conversation_id, policy=policy, now=now):
        return Lookup(VerifyResult.LOCKED)
    return Lookup(VerifyResult.MISMATCH)


def choice_line(choice: OrderChoice, *, tz: dt.tzinfo, today: dt.date) -> str:
    """One line of the list a lookup shows: "WS-1043, ordered Thu 26 Nov: Oak table lamp and 1 more"."""
    return f"{choice.number}, ordered {day(choice.placed_at.astimezone(tz).date(), today)}: {choice.items}"


def item_hint(order: Order, width: int = 28) -> str:
    """What was in an order, in a few words: "Oak table lamp and 2 more"."""
    names = [item.name for item in order.items]
    if not names:
        return "no items listed"
    first = names[0] if len(names[0]) <= width else names[0][:width].rsplit(" ", 1)[0].rstrip(",") + "…"
    return first + (f" and {len(names) - 1} more" if len(names) > 1 else "")


def remember(*, session: Session, conversation_id: str, order_number: str, now: dt.datetime) -> None:
    """Record that this conversation proved this order (again): the start of its validity."""
    row = session.scalars(select(Verification).where(Verification.conversation_id == conversation_id,
                                                     Verification.order_number == order_number)).first()
    if row is None:
        session.add(Verification(conversation_id=conversation_id, order_number=order_number, verified_at=now,
                                 last_used_at=now))
    else:
        row.verified_at = row.last_used_at = now
    session.flush()


def is_verified(*, session: Session, conversation_id: str, order_number: str, now: dt.datetime,
                ttl_minutes: int) -> bool:
    """Whether this conversation has a live verification of this order; using it keeps it alive.

    Expired rows are removed on the way, so a lapsed proof cannot come back.
    """
    row = session.scalars(select(Verification).where(Verification.conversation_id == conversation_id,
                                                     Verification.order_number == order_number)).first()
    if row is None:
        return False
    if row.last_used_at <= now - dt.timedelta(minutes=ttl_minutes):
        session.delete(row)
        session.flush()
        return False
    row.last_used_at = now
    session.flush()
    return True


def forget(*, session: Session, conversation_id: str) -> int:
    """End every verification of a conversation (a new session asks again); returns how many ended."""
    result = session.execute(delete(Verification).where(Verification.conversation_id == conversation_id))
    return int(result.rowcount or 0)

"""Proving who is asking before anything is said about an order.

An order number plus one proof (the email on the order or the delivery
postcode).  A wrong proof gets the same neutral answer whether the order
exists or not, and every attempt is recorded so repeated guessing is stopped:
per conversation, and per order number per hour whatever the conversation.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Optional

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.domain.enums import VerifyResult
from bot.domain.parsing import compact_postcode
from bot.domain.policy import Policy
from bot.store.models import Order, VerificationAttempt
from bot.store.queries import get_order, get_order_by_tracking_number


@dataclass(frozen=True)
class Outcome:
    result: VerifyResult
    order_number: Optional[str] = None

    @property
    def verified(self) -> bool:
        return self.result == VerifyResult.VERIFIED


def proof_matches(order: Order, *, email: Optional[str], postcode: Optional[str]) -> bool:
    if email and order.customer.email == email.strip().lower():
        return True
    return bool(postcode) and compact_postcode(order.ship_postcode) == compact_postcode(postcode or "")


def is_locked(*, session: Session, conversation_id: str, order_number: Optional[str], policy: Policy,
              now: dt.datetime) -> bool:
    failures = select(func.count()).select_from(VerificationAttempt).where(VerificationAttempt.succeeded.is_(False))
    in_conversation = session.scalar(failures.where(VerificationAttempt.conversation_id == conversation_id)) or 0
    if in_conversation >= policy.verify_max_failures_per_conversation:
        return True
    if order_number:
        recent = session.scalar(failures.where(VerificationAttempt.order_number == order_number,
                                               VerificationAttempt.created_at > now - dt.timedelta(hours=1))) or 0
        return recent >= policy.verify_max_failures_per_order_hour
    return False


def verify(*, session: Session, conversation_id: str, order_number: Optional[str] = None,
           tracking_number: Optional[str] = None, email: Optional[str] = None, postcode: Optional[str] = None,
           policy: Policy, now: dt.datetime) -> Outcome:
    """Check the proof against the store and record the attempt.

    Returns the verified order's number, or VerifyResult.MISMATCH (never saying whether the
    order exists), or VerifyResult.LOCKED once too many attempts failed.
    """
    key = order_number or (tracking_number or "").upper()
    if is_locked(session=session, conversation_id=conversation_id, order_number=key, policy=policy, now=now):
        return Outcome(VerifyResult.LOCKED)
    order = None
    if order_number:
        order = get_order(session=session, number=order_number)
    elif tracking_number:
        order = get_order_by_tracking_number(session=session, tracking_number=tracking_number)
    ok = order is not None and proof_matches(order, email=email, postcode=postcode)
    session.add(VerificationAttempt(conversation_id=conversation_id, order_number=key, succeeded=ok, created_at=now))
    session.flush()
    if ok:
        assert order is not None
        return Outcome(VerifyResult.VERIFIED, order.number)
    if is_locked(session=session, conversation_id=conversation_id, order_number=key, policy=policy, now=now):
        return Outcome(VerifyResult.LOCKED)
    return Outcome(VerifyResult.MISMATCH)

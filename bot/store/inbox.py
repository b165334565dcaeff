"""Messages arriving on a channel: each provider message id is run once, even across restarts.

Meta re-delivers a webhook whenever it did not see a quick 200, for days and
to whichever replica the load balancer picks, so "have we seen this id?" must
be answered by the store, not by one process's memory.  And once Meta has its
200 it never sends the message again, so the store must also keep what is
needed to run the turn after a restart or a crash:

* :func:`accept_delivery` records a message (with its payload) *before* the
  webhook is answered, claimed by the process that received it;
* :func:`mark_handled` records that its turn ran (or failed for good), and
  drops the payload, which is not needed any more;
* :func:`claim_unhandled` hands the messages left unhandled to exactly one
  process: a claim is a conditional UPDATE that only one caller can win, and
  a claim older than a lease counts as abandoned (its process died);
* :func:`renew_claims` keeps the claims of a live process fresh, so a turn
  that takes longer than the lease is never run by a second process;
* :func:`release_claims` gives back claims a stopping process will not run,
  so the next process can take them at once instead of after the lease.

A claim is identified by its ``claimed_at`` value: renewing or releasing one
only succeeds while the row still holds the value this process wrote, so a
process never renews or releases a claim another process has taken since.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional

from sqlalchemy import delete, null, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.domain.clock import utcnow
from bot.store.models import ChannelDelivery

#: How long delivered ids are remembered; Meta retries for up to about a week.
KEEP_FOR = dt.timedelta(days=8)
#: How long a claim protects a message from other processes without being renewed.
CLAIM_LEASE = dt.timedelta(seconds=60)
#: The longest a stored message id may be (the column's width).
MESSAGE_ID_LIMIT = 255


@dataclass(frozen=True)
class Claimed:
    """A message this process now holds: run it, then mark it handled.

    Attributes:
        row_id: the row's primary key, for :func:`mark_handled` and the claim functions.
        message_id: the provider's message id.
        payload: what :func:`accept_delivery` stored to run the turn again (None for a
            row recorded without one, which cannot be run).
        claimed_at: the claim's value, which identifies this process's claim.
    """

    row_id: int
    message_id: str
    payload: Optional[Dict[str, Any]]
    claimed_at: dt.datetime


def accept_delivery(*, session: Session, channel: str, message_id: str, payload: Optional[Mapping[str, Any]],
                    now: Optional[dt.datetime] = None, handled: bool = False) -> Optional[Claimed]:
    """Record `message_id` for `channel`, claimed by the caller; None when it was recorded before.

    The unique key decides, so two replicas receiving the same delivery at the
    same moment cannot both run it: on PostgreSQL the second insert waits for
    the first transaction and then fails on the key.  Ids older than
    :data:`KEEP_FOR` are dropped on the way (an indexed range delete, cheap
    when there are none), so the table stays small without a scheduled job.
    The caller commits, and should answer the webhook only after that.

    Args:
        session: the caller's session and transaction.
        channel: the channel's name ("whatsapp", "messenger").
        message_id: the provider's id, which a re-delivery repeats.
        payload: the JSON needed to run the turn again after a restart.
        now: the time of receipt and of the claim.
        handled: record the message as handled already (nothing will run it).
    """
    now = now or utcnow()
    forget_old_deliveries(session=session, now=now)
    stored = dict(payload) if payload is not None else None
    # null(): SQL NULL, not the JSON value null, for "nothing to run again".
    row = ChannelDelivery(channel=channel, message_id=message_id[:MESSAGE_ID_LIMIT], received_at=now,
                          payload=stored if stored is not None else null(),
                          handled_at=now if handled else None, claimed_at=None if handled else now)
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        return None
    return Claimed(row_id=int(row.id), message_id=message_id[:MESSAGE_ID_LIMIT], payload=stored, claimed_at=now)


def first_delivery(*, session: Session, channel: str, message_id: str,
                   now: Optional[dt.datetime] = None) -> bool:
    """Record `message_id` for `channel` as handled; False when it was recorded before.

    For callers that only need "seen before?" and keep no payload to run again.
    """
    return accept_delivery(session=session, channel=channel, message_id=message_id, payload=None, now=now,
                           handled=True) is not None


def claim_unhandled(*, session: Session, channel: str, now: Optional[dt.datetime] = None,
                    lease: dt.timedelta = CLAIM_LEASE, limit: int = 500,
                    skip: Iterable[int] = ()) -> List[Claimed]:
    """Claim `channel`'s messages that nobody ran and nobody holds; the caller's, in received order.

    A message is free when it is not handled and its claim is missing or older
    than `lease`.  Each is claimed with a conditional UPDATE that repeats that
    test, so of two processes claiming at once exactly one sees a row count
    of 1 for each message (PostgreSQL re-checks the condition once the other
    transaction commits; SQLite lets one writer in at a time).  The caller
    commits, then runs the messages and marks each handled.

    Args:
        session: the caller's session and transaction.
        channel: whose messages to claim.
        now: the claim's time; a claim before `now - lease` counts as abandoned.
        lease: how long a claim protects a message without being renewed.
        limit: the most messages claimed at once (the rest wait for the next round).
        skip: row ids the caller already holds (it never claims its own messages again).
    """
    now = now or utcnow()
    stale = now - lease
    free = (ChannelDelivery.channel == channel, ChannelDelivery.handled_at.is_(None),
            or_(ChannelDelivery.claimed_at.is_(None), ChannelDelivery.claimed_at < stale))
    held = set(skip)
    candidates = session.execute(
        select(ChannelDelivery.id, ChannelDelivery.message_id, ChannelDelivery.payload)
        .where(*free).order_by(ChannelDelivery.received_at, ChannelDelivery.id).limit(limit)
    ).all()
    claimed: List[Claimed] = []
    for row_id, message_id, payload in candidates:
        if row_id in held:
            continue
        won = session.execute(update(ChannelDelivery).where(ChannelDelivery.id == row_id, *free)
                              .values(claimed_at=now).execution_options(synchronize_session=False))
        if won.rowcount == 1:
            claimed.append(Claimed(row_id=int(row_id), message_id=str(message_id), payload=payload, claimed_at=now))
    return claimed


def renew_claims(*, session: Session, claims: Mapping[int, dt.datetime],
                 now: Optional[dt.datetime] = None) -> Dict[int, dt.datetime]:
    """Move the caller's claims (row id -> its claimed_at) to `now`; returns those still the caller's.

    A claim that is missing from the answer was taken by another process after
    its lease ran out, or the message was handled meanwhile.  The caller commits.
    """
    now = now or utcnow()
    renewed: Dict[int, dt.datetime] = {}
    for row_id, claimed_at in claims.items():
        result = session.execute(update(ChannelDelivery)
                                 .where(ChannelDelivery.id == row_id, ChannelDelivery.claimed_at == claimed_at,
                                        ChannelDelivery.handled_at.is_(None))
                                 .values(claimed_at=now).execution_options(synchronize_session=False))
        if result.rowcount == 1:
            renewed[row_id] = now
    return renewed


def release_claims(*, session: Session, claims: Mapping[int, dt.datetime]) -> int:
    """Give back the caller's claims on messages it will not run; returns how many it gave back.

    A released message is free at once for the next process, where an
    abandoned claim would make it wait for the lease.  The caller commits.
    """
    released = 0
    for row_id, claimed_at in claims.items():
        result = session.execute(update(ChannelDelivery)
                                 .where(ChannelDelivery.id == row_id, ChannelDelivery.claimed_at == claimed_at,
                                        ChannelDelivery.handled_at.is_(None))
                                 .values(claimed_at=None).execution_options(synchronize_session=False))
        released += result.rowcount or 0
    return released


def mark_handled(*, session: Session, row_ids: Iterable[int], now: Optional[dt.datetime] = None) -> int:
    """Record that the messages' turns ran (or failed for good), so nothing runs them again.

    Unconditional: whoever ran the turn may say so, even if its claim lapsed.
    The payload (the shopper's words) is dropped: it was kept only to run the
    turn, and the id alone recognises a re-delivery.  The caller commits.
    """
    ids = list(row_ids)
    if not ids:
        return 0
    result = session.execute(update(ChannelDelivery)
                             .where(ChannelDelivery.id.in_(ids), ChannelDelivery.handled_at.is_(None))
                             .values(handled_at=now or utcnow(), payload=null())
                             .execution_options(synchronize_session=False))
    return result.rowcount or 0


def forget_old_deliveries(*, session: Session, now: Optional[dt.datetime] = None) -> int:
    """Drop ids older than :data:`KEEP_FOR`; returns how many went."""
    now = now or utcnow()
    result = session.execute(delete(ChannelDelivery).where(ChannelDelivery.received_at < now - KEEP_FOR))
    return result.rowcount or 0

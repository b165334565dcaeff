"""Messages arriving on a channel: each provider message id is handled once.

Meta re-delivers a webhook whenever it did not see a quick 200, for days and
to whichever replica the load balancer picks, so "have we seen this id?" must
be answered by the store, not by one process's memory.
"""

from __future__ import annotations

import datetime as dt
from typing import Optional

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.domain.clock import utcnow
from bot.store.models import ChannelDelivery

#: How long delivered ids are remembered; Meta retries for up to about a week.
KEEP_FOR = dt.timedelta(days=8)


def first_delivery(*, session: Session, channel: str, message_id: str,
                   now: Optional[dt.datetime] = None) -> bool:
    """Record `message_id` for `channel`; False when it was recorded before.

    The unique key decides, so two replicas receiving the same delivery at
    the same moment cannot both process it.  Ids older than :data:`KEEP_FOR`
    are dropped on the way (an indexed range delete, cheap when there are
    none), so the table stays small without a scheduled job.  The caller commits.
    """
    now = now or utcnow()
    forget_old_deliveries(session=session, now=now)
    try:
        with session.begin_nested():
            session.add(ChannelDelivery(channel=channel, message_id=message_id[:255], received_at=now))
    except IntegrityError:
        return False
    return True


def forget_old_deliveries(*, session: Session, now: Optional[dt.datetime] = None) -> int:
    """Drop ids older than :data:`KEEP_FOR`; returns how many went."""
    now = now or utcnow()
    result = session.execute(delete(ChannelDelivery).where(ChannelDelivery.received_at < now - KEEP_FOR))
    return result.rowcount or 0

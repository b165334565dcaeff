"""Handing a conversation to a human agent: one record with everything they need."""

from __future__ import annotations

import datetime as dt
from typing import Any, Dict, List, Optional

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.answers import parcels, summary_line
from bot.config import Settings
from bot.models import Handoff, Order
from bot.store import audit, get_order

REASONS = {
    "asked": "the shopper asked for a person",
    "not_understood": "the assistant did not understand twice in a row",
    "high_value": "a claim on a high-value order",
    "repeat_claim": "a repeat claim",
    "locked_out": "verification locked out",
    "address_impossible": "the address can no longer be changed",
    "error": "the assistant hit an error",
}


def open_handoff(*, session: Session, conversation_id: str, channel: str, reason: str,
                 order_number: Optional[str], transcript: List[Dict[str, Any]], settings: Settings,
                 now: dt.datetime) -> Handoff:
    """Create the handoff once per conversation while one is waiting; returns it."""
    waiting = session.scalars(select(Handoff).where(Handoff.conversation_id == conversation_id,
                                                    Handoff.state.in_(("queued", "claimed")))).first()
    if waiting is not None:
        return waiting
    order: Optional[Order] = get_order(session=session, number=order_number) if order_number else None
    context: Dict[str, Any] = {"verified_order": order_number}
    summary = REASONS.get(reason, reason).capitalize() + "."
    if order is not None:
        found = parcels(order, settings, now)
        context["order"] = summary_line(order, found)
        context["shipments"] = [
            {"carrier": p.shipment.carrier.code, "tracking_number": p.shipment.tracking_number,
             "status": p.state.status, "days_late": p.state.days_late,
             "reason": p.state.delay_reason} for p in found]
        summary += f" Verified order {summary_line(order, found)}."
    else:
        summary += " No verified order."
    handoff = Handoff(conversation_id=conversation_id, channel=channel, reason=reason, summary=summary,
                      context=context, transcript=transcript, order_id=order.id if order else None,
                      customer_id=order.customer_id if order else None, created_at=now)
    session.add(handoff)
    session.flush()
    audit(session=session, actor="bot", action="handoff.created", entity="handoff", entity_id=handoff.id,
          details={"reason": reason, "conversation_id": conversation_id})
    return handoff

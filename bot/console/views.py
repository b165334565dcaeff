"""What the console shows, as JSON: the queue, and a hand-off beside the order and its tracking."""

from __future__ import annotations

import datetime as dt
from typing import Any, Dict, List, Optional, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from bot.config import Settings
from bot.console.queue import get_handoff
from bot.domain.carriers import REASON_LABELS, STATUS_LABELS
from bot.domain.enums import OPEN_HANDOFF_STATES, HandoffState
from bot.services.handoff import REASONS
from bot.store.models import Agent, Handoff, Order, Shipment
from bot.store.queries import get_order, shipment_state, shipment_tracking_url


def reason_text(reason: str) -> str:
    """The hand-off reason as a sentence for the queue (the wording the handoff record uses)."""
    text = REASONS.get(reason, reason.replace("_", " "))
    return text[:1].upper() + text[1:]


def _iso(value: Optional[dt.datetime]) -> Optional[str]:
    return value.astimezone(dt.timezone.utc).isoformat() if value is not None else None


def describe_handoff(handoff: Handoff, now: dt.datetime, agents: Dict[int, Agent]) -> Dict[str, Any]:
    """One handoff as the console shows it in the queue, JSON-ready."""
    holder = agents.get(handoff.agent_id) if handoff.agent_id is not None else None
    end = handoff.claimed_at or now
    context = handoff.context or {}
    return {
        "id": handoff.id,
        "conversation_id": handoff.conversation_id,
        "channel": handoff.channel,
        "state": handoff.state,
        "reason": handoff.reason,
        "reason_text": reason_text(handoff.reason),
        "summary": handoff.summary,
        "order_number": context.get("verified_order"),
        "created_at": _iso(handoff.created_at),
        "claimed_at": _iso(handoff.claimed_at),
        "closed_at": _iso(handoff.closed_at),
        "waiting_seconds": max(0, int((end - handoff.created_at).total_seconds())),
        "agent_id": handoff.agent_id,
        "agent_name": holder.display_name if holder is not None else None,
    }


def _agents_by_id(session: Session, ids: Sequence[Optional[int]]) -> Dict[int, Agent]:
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    return {a.id: a for a in session.scalars(select(Agent).where(Agent.id.in_(wanted)))}


def list_queue(*, session: Session, now: dt.datetime) -> List[Dict[str, Any]]:
    """Open handoffs: waiting ones first, oldest first (fair), then those being handled.

    `waiting_seconds` is how long the shopper has waited for a person: until
    now while queued, until the claim once claimed.
    """
    rows = list(session.scalars(select(Handoff).where(Handoff.state.in_(OPEN_HANDOFF_STATES))
                                .order_by(Handoff.created_at, Handoff.id)))
    rows.sort(key=lambda h: 0 if h.state == HandoffState.QUEUED else 1)
    agents = _agents_by_id(session, [h.agent_id for h in rows])
    return [describe_handoff(h, now, agents) for h in rows]


def _date(value: Optional[dt.date]) -> Optional[str]:
    return value.isoformat() if value is not None else None


def _shipment(shipment: Shipment, settings: Settings, now: dt.datetime) -> Dict[str, Any]:
    state = shipment_state(shipment, settings=settings, now=now)
    return {
        "carrier": shipment.carrier.name,
        "tracking_number": shipment.tracking_number,
        "tracking_url": shipment_tracking_url(shipment),
        "status": state.status,
        "status_text": STATUS_LABELS.get(state.status, state.status),
        "delay_reason": REASON_LABELS.get(state.delay_reason or "", state.delay_reason),
        "days_late": state.days_late,
        "is_late": state.is_late,
        "stalled": state.stalled,
        "presumed_lost": state.presumed_lost,
        "eta": _date(state.eta),
        "delivered_on": _date(state.delivered_on),
        "shipped_at": _iso(shipment.shipped_at),
        "events": [
            {"at": _iso(event.occurred_at), "code": event.raw_code, "text": event.raw_text,
             "location": event.location, "status": event.status,
             "status_text": STATUS_LABELS.get(event.status or "", "")}
            for event in sorted(shipment.events, key=lambda e: (e.occurred_at, e.id), reverse=True)
        ],
    }


def _order(order: Order, settings: Settings, now: dt.datetime) -> Dict[str, Any]:
    address = [order.ship_name, order.ship_line1, order.ship_line2,
               " ".join(p for p in (order.ship_postcode, order.ship_city) if p), order.ship_region,
               order.ship_country]
    return {
        "number": order.number,
        "customer": order.customer.name,
        "email": order.customer.email,
        "phone": order.customer.phone,
        "placed_at": _iso(order.placed_at),
        "promised_date": _date(order.promised_date),
        "value": f"{order.value:.2f}",
        "currency": order.currency,
        "address": [line for line in address if line],
        "items": [{"sku": i.sku, "name": i.name, "quantity": i.quantity} for i in order.items],
        "shipments": [_shipment(s, settings, now) for s in order.shipments],
    }


def _saved_line(line: Dict[str, Any]) -> Dict[str, Any]:
    """A transcript line as saved at the hand-off, with its time (a Unix timestamp there) in ISO form."""
    at = line.get("at")
    if isinstance(at, (int, float)):
        at = dt.datetime.fromtimestamp(at, dt.timezone.utc).isoformat()
    return {**line, "at": at if isinstance(at, str) else None}


def handoff_detail(*, session: Session, handoff_id: int, settings: Settings, now: dt.datetime) -> Dict[str, Any]:
    """A handoff with the order, its shipments and their tracking events as the store has them now.

    The order is the one verified in the conversation; the handoff's own
    `context` keeps what was true at the moment of the hand-off.

    Raises:
        HandoffNotFound: no such handoff.
    """
    handoff = get_handoff(session=session, handoff_id=handoff_id)
    detail = describe_handoff(handoff, now, _agents_by_id(session, [handoff.agent_id]))
    detail["context"] = handoff.context or {}
    detail["transcript_at_handoff"] = [_saved_line(line) for line in handoff.transcript or [] if isinstance(line, dict)]
    order: Optional[Order] = None
    if handoff.order_id is not None:
        order = session.scalars(
            select(Order).where(Order.id == handoff.order_id).options(
                selectinload(Order.customer), selectinload(Order.items),
                selectinload(Order.shipments).selectinload(Shipment.events),
                selectinload(Order.shipments).selectinload(Shipment.carrier))).first()
    elif detail["order_number"]:
        order = get_order(session=session, number=str(detail["order_number"]))
    detail["order"] = _order(order, settings, now) if order is not None else None
    return detail

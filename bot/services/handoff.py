"""Handing a conversation to a human agent: one record with everything they need."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.config import Settings
from bot.domain.agent_hours import parse_hours
from bot.domain.enums import OPEN_HANDOFF_STATES, HandoffReason, HandoffState
from bot.services.answers import parcels, reply_time, summary_line
from bot.store.models import Agent, Handoff, Order
from bot.store.queries import audit, get_order

#: Each hand-off reason as the agents read it (queue, summary, helpdesk copy).
REASONS: Dict[str, str] = {
    HandoffReason.ASKED: "the shopper asked for a person",
    HandoffReason.NOT_UNDERSTOOD: "the assistant did not understand twice in a row",
    HandoffReason.HIGH_VALUE: "a claim on a high-value order",
    HandoffReason.REPEAT_CLAIM: "a repeat claim",
    HandoffReason.LOCKED_OUT: "verification locked out",
    HandoffReason.ADDRESS_IMPOSSIBLE: "the address can no longer be changed",
    HandoffReason.DELIVERY_PROBLEM: "a stuck or held delivery to take up with the carrier or the warehouse",
    HandoffReason.ERROR: "the assistant hit an error",
}


def open_handoff(*, session: Session, conversation_id: str, channel: str, reason: str,
                 order_number: Optional[str], transcript: List[Dict[str, Any]], settings: Settings,
                 now: dt.datetime, helpdesk: bool = False) -> Tuple[Handoff, bool]:
    """Create the handoff once per conversation while one is open.

    Returns:
        The open handoff, and whether this call created it.  With `helpdesk`,
        a new handoff starts with helpdesk_status "pending".
    """
    waiting = session.scalars(select(Handoff).where(Handoff.conversation_id == conversation_id,
                                                    Handoff.state.in_(OPEN_HANDOFF_STATES))).first()
    if waiting is not None:
        return waiting, False
    if reason == HandoffReason.LOCKED_OUT:
        # One per conversation, ever: lock-outs are what someone guessing produces, and each
        # must not become another conversation in the agents' queue.
        earlier = session.scalars(select(Handoff).where(Handoff.conversation_id == conversation_id,
                                                        Handoff.reason == HandoffReason.LOCKED_OUT)).first()
        if earlier is not None:
            return earlier, False
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
                      customer_id=order.customer_id if order else None, created_at=now,
                      helpdesk_status="pending" if helpdesk else None)
    session.add(handoff)
    session.flush()
    audit(session=session, actor="bot", action="handoff.created", entity="handoff", entity_id=handoff.id,
          details={"reason": reason, "conversation_id": conversation_id})
    return handoff, True


def online_agents(*, session: Session, now: dt.datetime, minutes: int) -> List[Agent]:
    """Active agents whose console was used within `minutes` (AGENT_ONLINE_MINUTES)."""
    since = now - dt.timedelta(minutes=minutes)
    return list(session.scalars(
        select(Agent).where(Agent.active.is_(True), Agent.last_seen_at >= since).order_by(Agent.display_name)))


@dataclass(frozen=True)
class Availability:
    """Whether a person can answer soon, and what the shopper is told."""

    agents_online: int
    in_hours: bool
    wait_minutes: Optional[int]  # the reply promised within agent hours; None outside them
    response: str  # the domain response to send
    wording: Dict[str, str]  # its variables


def availability(*, session: Session, settings: Settings, now: dt.datetime) -> Availability:
    """Who can answer, and when the shopper is told they will.

    In agent hours someone replies within a number of minutes: the queue ahead
    shared among the agents online (console active within
    AGENT_ONLINE_MINUTES), at AGENT_MINUTES_PER_CONVERSATION each and never
    below two minutes, or AGENT_REPLY_MINUTES when no console is open.  When
    agent hours end before that, the shopper hears the closing time and the
    next opening; outside agent hours, only the next opening.
    """
    hours = parse_hours(settings.agent_hours)
    local = now.astimezone(settings.tz)
    online = len(online_agents(session=session, now=now, minutes=settings.agent_online_minutes))
    if not hours.is_open(local):
        when = reply_time(local_now=local, opening=hours.next_opening(local))
        return Availability(online, False, None, "utter_handoff_later", {"when": when})
    if online:
        waiting = select(func.count()).select_from(Handoff).where(Handoff.state == HandoffState.QUEUED)
        queued = session.scalar(waiting) or 0
        minutes = max(2, math.ceil(queued * settings.agent_minutes_per_conversation / online))
    else:
        minutes = settings.agent_reply_minutes
    closes = hours.closes_at(local)
    if closes is not None and local + dt.timedelta(minutes=minutes) > closes:
        when = reply_time(local_now=local, opening=hours.next_opening(local))
        closing = "midnight" if closes.time() == dt.time(0, 0) else f"{closes:%H:%M}"
        return Availability(online, True, minutes, "utter_handoff_closing", {"closes": closing, "when": when})
    return Availability(online, True, minutes, "utter_handoff", {"wait": f"{minutes} minutes"})


def helpdesk_payload(handoff: Handoff) -> Dict[str, Any]:
    """What the external helpdesk receives for a new handoff."""
    return {
        "type": "handoff.created",
        "handoff_id": handoff.id,
        "conversation_id": handoff.conversation_id,
        "channel": handoff.channel,
        "reason": handoff.reason,
        "reason_text": REASONS.get(handoff.reason, handoff.reason),
        "summary": handoff.summary,
        "context": handoff.context,
        "transcript": handoff.transcript,
        "created_at": handoff.created_at.isoformat() if handoff.created_at else None,
    }


def record_helpdesk_status(*, session: Session, handoff_id: int, status: str,
                           detail: Optional[str] = None) -> None:
    """Remember how the helpdesk copy went; the handoff itself is never touched otherwise."""
    handoff = session.get(Handoff, handoff_id)
    if handoff is None:
        return
    handoff.helpdesk_status = status
    audit(session=session, actor="bot", action=f"handoff.helpdesk_{status}", entity="handoff",
          entity_id=handoff_id, details={"detail": detail} if detail else {})


def _when(timestamp: Any) -> Optional[str]:
    if not isinstance(timestamp, (int, float)):
        return None
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).isoformat()


def transcript(events: Sequence[Any], limit: int = 400) -> List[Dict[str, Any]]:
    """The conversation as the agent reads it: who said what, and when it changed hands.

    Each line has `from` ("shopper", "bot", "agent" or "system"), `text` and
    `at` (ISO time); agent lines name the agent, bot lines list their button
    titles, and a proactive update's lines are marked `update` (the trigger
    behind them is not a line).  `events` are Rasa tracker events, as the action server and the
    HTTP API both give them; the newest `limit` lines are kept.
    """
    lines: List[Dict[str, Any]] = []
    update = False  # the bot lines after an external trigger are a proactive update, not an answer
    for event in events:
        if not isinstance(event, dict):
            continue
        kind = event.get("event")
        at = _when(event.get("timestamp"))
        intent = str(((event.get("parse_data") or {}).get("intent") or {}).get("name") or "")
        if kind == "user" and intent.startswith("EXTERNAL_"):
            update = intent == "EXTERNAL_tracking_update"
        elif kind == "user" and event.get("text"):
            update = False
            lines.append({"from": "shopper", "text": str(event["text"]), "at": at})
        elif kind == "bot" and (event.get("text") or (event.get("data") or {}).get("buttons")):
            agent = (event.get("metadata") or {}).get("agent")
            buttons = [str(b.get("title") or b.get("payload") or "")
                       for b in ((event.get("data") or {}).get("buttons") or []) if isinstance(b, dict)]
            line: Dict[str, Any] = {"from": "agent" if agent else "bot", "text": str(event.get("text") or ""),
                                    "at": at}
            if agent:
                line["agent"] = str(agent)
            elif update:
                line["update"] = True
            if buttons:
                line["buttons"] = buttons
            lines.append(line)
        elif kind == "pause":
            lines.append({"from": "system", "text": "Handed over to a person; the assistant is silent.", "at": at})
        elif kind == "resume":
            lines.append({"from": "system", "text": "The assistant answers again.", "at": at})
    return lines[-limit:]

"""The hand-off queue's state machine: claim, reply rights, resolve, hand back.

Every change goes through here, so the rules hold whichever console process
(or replica) serves the request:

* claiming is one conditional ``UPDATE ... WHERE state = 'queued'``: of two
  agents clicking at the same moment exactly one gets the conversation;
* only the agent holding a conversation may reply to it, resolve it or hand
  it back, and every change of hands leaves an audit row.

Keyword-only functions taking the session they work in; the caller commits.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Dict

from sqlalchemy import update
from sqlalchemy.orm import Session

from bot.console.accounts import SignedIn
from bot.domain.enums import HandoffState
from bot.store.models import Agent, Handoff
from bot.store.queries import audit


class QueueError(Exception):
    """A queue operation that cannot be done; `status` is the HTTP status it maps to."""

    status = 409


class HandoffNotFound(QueueError):
    """No handoff has that id."""

    status = 404


class AlreadyTaken(QueueError):
    """Another agent claimed it first, or it is already closed."""

    status = 409


class NotYours(QueueError):
    """The conversation is held by another agent (or by nobody yet)."""

    status = 403


def get_handoff(*, session: Session, handoff_id: int) -> Handoff:
    """The handoff with this id; ids out of the column's range are simply not found.

    Raises:
        HandoffNotFound: there is no such handoff.
    """
    handoff = session.get(Handoff, handoff_id) if 0 < handoff_id < 2**31 else None
    if handoff is None:
        raise HandoffNotFound(f"There is no handoff {handoff_id}.")
    return handoff


def _holder_name(session: Session, handoff: Handoff) -> str:
    holder = session.get(Agent, handoff.agent_id) if handoff.agent_id is not None else None
    return holder.display_name if holder is not None else "another agent"


def claim(*, session: Session, handoff_id: int, agent: SignedIn, now: dt.datetime) -> Handoff:
    """Take a waiting conversation.

    The state check and the change are one statement, so when two agents
    claim at once the database lets exactly one of them through.

    Raises:
        HandoffNotFound: no such handoff.
        AlreadyTaken: someone claimed it first, or it is closed.
    """
    handoff = get_handoff(session=session, handoff_id=handoff_id)
    result = session.execute(
        update(Handoff).where(Handoff.id == handoff_id, Handoff.state == HandoffState.QUEUED)
        .values(state=HandoffState.CLAIMED, agent_id=agent.agent_id, claimed_at=now)
        .execution_options(synchronize_session=False))
    if result.rowcount != 1:
        session.refresh(handoff)
        if handoff.state == HandoffState.CLAIMED:
            if handoff.agent_id == agent.agent_id:
                raise AlreadyTaken("You have already claimed this conversation.")
            raise AlreadyTaken(f"{_holder_name(session, handoff)} claimed this conversation first.")
        raise AlreadyTaken(f"This conversation is already {handoff.state}.")
    session.refresh(handoff)
    audit(session=session, actor=f"agent:{agent.username}", action="handoff.claimed", entity="handoff",
          entity_id=handoff.id, details={"conversation_id": handoff.conversation_id,
                                         "waited_seconds": int((now - handoff.created_at).total_seconds())})
    return handoff


def require_holder(*, session: Session, handoff_id: int, agent: SignedIn) -> Handoff:
    """The handoff, if `agent` holds it now (the condition for replying and closing).

    Raises:
        HandoffNotFound: no such handoff.
        AlreadyTaken: it is closed already.
        NotYours: it is waiting to be claimed, or another agent holds it.
    """
    handoff = get_handoff(session=session, handoff_id=handoff_id)
    if handoff.state in (HandoffState.RESOLVED, HandoffState.RETURNED):
        raise AlreadyTaken(f"This conversation is already {handoff.state}.")
    if handoff.state != HandoffState.CLAIMED:
        raise NotYours("Claim this conversation first.")
    if handoff.agent_id != agent.agent_id:
        raise NotYours(f"{_holder_name(session, handoff)} is handling this conversation.")
    return handoff


def _close(session: Session, handoff_id: int, agent: SignedIn, now: dt.datetime, state: str,
           details: Dict[str, Any]) -> Handoff:
    handoff = require_holder(session=session, handoff_id=handoff_id, agent=agent)
    result = session.execute(
        update(Handoff).where(Handoff.id == handoff_id, Handoff.state == HandoffState.CLAIMED,
                              Handoff.agent_id == agent.agent_id)
        .values(state=state, closed_at=now).execution_options(synchronize_session=False))
    if result.rowcount != 1:  # closed in between, by a second click of the same agent
        session.refresh(handoff)
        raise AlreadyTaken(f"This conversation is already {handoff.state}.")
    session.refresh(handoff)
    audit(session=session, actor=f"agent:{agent.username}", action=f"handoff.{state}", entity="handoff",
          entity_id=handoff.id, details={"conversation_id": handoff.conversation_id, **details})
    return handoff


def resolve(*, session: Session, handoff_id: int, agent: SignedIn, now: dt.datetime,
            closing_line: bool = False) -> Handoff:
    """Close a conversation the agent handled (the shopper's next message goes to the assistant).

    Raises:
        HandoffNotFound, AlreadyTaken, NotYours: see :func:`require_holder`.
    """
    return _close(session, handoff_id, agent, now, HandoffState.RESOLVED, {"closing_line": closing_line})


def hand_back(*, session: Session, handoff_id: int, agent: SignedIn, now: dt.datetime) -> Handoff:
    """Give the conversation back to the assistant, which greets the shopper again.

    Raises:
        HandoffNotFound, AlreadyTaken, NotYours: see :func:`require_holder`.
    """
    return _close(session, handoff_id, agent, now, HandoffState.RETURNED, {})

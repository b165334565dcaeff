"""The people behind the assistant: agent accounts, console logins and the hand-off queue.

Everything an agent does goes through here, so the rules hold whichever
console process (or replica) serves the request:

* passwords are kept only as argon2id hashes, and a failed login costs the
  same whether the username exists or not, so response times do not reveal
  which accounts exist;
* a login is a random 32-byte token in the agent's cookie; the store keeps
  only its SHA-256, so a copy of the database lets nobody sign in;
* claiming is one conditional ``UPDATE ... WHERE state = 'queued'``: of two
  agents clicking at the same moment exactly one gets the conversation;
* only the agent holding a conversation may reply to it, resolve it or hand
  it back, and every change of hands leaves an audit row.

Keyword-only functions taking the session they work in; the caller commits.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, selectinload

from bot.carriers import REASON_LABELS, STATUS_LABELS
from bot.config import Settings
from bot.handoff import REASONS, online_agents  # noqa: F401 - the console reads presence here
from bot.models import Agent, AgentSession, Handoff, Order, Shipment
from bot.store import audit, get_order, shipment_state, shipment_tracking_url

MIN_PASSWORD_CHARS = 10
#: Longer passwords are refused: hashing megabytes on every login attempt would be a cheap attack.
MAX_PASSWORD_CHARS = 256
#: Lower-case letters, digits, dot, dash and underscore; 2 to 80 characters, starting with a letter or digit.
USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{1,79}")
MAX_DISPLAY_NAME_CHARS = 120
#: What the cookie carries: `secrets.token_urlsafe(32)`, 43 URL-safe characters.
TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")
#: Presence is written at most this often per session; "online" is measured in minutes.
SEEN_RESOLUTION = dt.timedelta(seconds=15)

QUEUED, CLAIMED, RESOLVED, RETURNED = "queued", "claimed", "resolved", "returned"
OPEN_STATES = (QUEUED, CLAIMED)

class AgentError(ValueError):
    """An account cannot be created as asked; the message says why, for the person typing."""


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


@dataclass(frozen=True)
class SignedIn:
    """The agent behind a valid console login, detached from any store session."""

    agent_id: int
    username: str
    display_name: str


# --- passwords ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _hasher() -> PasswordHasher:
    """argon2id with the library's current recommended parameters (RFC 9106, low memory)."""
    return PasswordHasher()


@functools.lru_cache(maxsize=1)
def _decoy_hash() -> str:
    """A hash of a random password, verified against when the username is unknown.

    Verifying it costs what verifying a real agent's hash costs, so a wrong
    username cannot be told from a wrong password by timing.  Built on first
    use (the console warms it at start-up), never at import.
    """
    return _hasher().hash(secrets.token_urlsafe(24))


def warm_up() -> None:
    """Build the hasher and the decoy hash now, so the first failed login is not the slow one."""
    _decoy_hash()


def normalise_username(raw: str) -> str:
    """Usernames are compared in lower case without surrounding spaces."""
    return raw.strip().lower()


def check_new_password(password: str) -> None:
    """Refuse a password too short to protect customer data, or too long to hash cheaply.

    Raises:
        AgentError: saying which limit it breaks.
    """
    if len(password) < MIN_PASSWORD_CHARS:
        raise AgentError(f"The password needs at least {MIN_PASSWORD_CHARS} characters.")
    if len(password) > MAX_PASSWORD_CHARS:
        raise AgentError(f"The password may have at most {MAX_PASSWORD_CHARS} characters.")


def create_agent(*, session: Session, username: str, display_name: str, password: str,
                 now: Optional[dt.datetime] = None, actor: str = "cli") -> Agent:
    """Add an agent who can log in to the console.

    Raises:
        AgentError: the username is taken or malformed, the name is empty or
            too long, or the password is too short.
    """
    name = normalise_username(username)
    if not USERNAME.fullmatch(name):
        raise AgentError("A username is 2 to 80 characters: letters, digits, '.', '-' and '_', "
                         "starting with a letter or digit.")
    shown = " ".join(display_name.split())
    if not shown:
        raise AgentError("Give the agent a display name (--name \"Alex Jansen\").")
    if len(shown) > MAX_DISPLAY_NAME_CHARS:
        raise AgentError(f"The display name may have at most {MAX_DISPLAY_NAME_CHARS} characters.")
    check_new_password(password)
    if session.scalars(select(Agent.id).where(Agent.username == name)).first() is not None:
        raise AgentError(f"An agent called {name!r} already exists.")
    agent = Agent(username=name, display_name=shown, password_hash=_hasher().hash(password), active=True,
                  created_at=now or _utcnow())
    session.add(agent)
    session.flush()  # a concurrent duplicate still meets the unique key here
    audit(session=session, actor=actor, action="agent.created", entity="agent", entity_id=agent.id,
          details={"username": name})
    return agent


def authenticate(*, session: Session, username: str, password: str) -> Optional[Agent]:
    """The active agent with this username and password, or None.

    Unknown usernames, inactive accounts and wrong passwords all take one
    argon2 verification and all give None, so neither the answer nor its
    timing says which it was.  A hash made with older parameters is
    upgraded on the way.
    """
    name = normalise_username(username) if isinstance(username, str) else ""
    agent = None
    if USERNAME.fullmatch(name):
        agent = session.scalars(select(Agent).where(Agent.username == name)).first()
    stored = agent.password_hash if agent is not None else _decoy_hash()
    candidate = password if isinstance(password, str) and len(password) <= MAX_PASSWORD_CHARS else ""
    try:
        matches = _hasher().verify(stored, candidate) and bool(candidate)
    except (VerificationError, InvalidHashError):
        matches = False
    if not matches or agent is None or not agent.active:
        return None
    if _hasher().check_needs_rehash(stored):
        agent.password_hash = _hasher().hash(candidate)
    return agent


# --- console logins ----------------------------------------------------------------------


def token_hash(token: str) -> str:
    """What the store keeps of a login token: its SHA-256, in hex."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def start_session(*, session: Session, agent: Agent, now: dt.datetime, hours: int) -> str:
    """Log `agent` in for `hours`; returns the token for the cookie (shown nowhere else).

    Expired logins of every agent are cleared on the way, so the table stays
    small without a scheduled job.
    """
    purge_expired_sessions(session=session, now=now)
    token = secrets.token_urlsafe(32)
    session.add(AgentSession(agent_id=agent.id, token_hash=token_hash(token), created_at=now,
                             expires_at=now + dt.timedelta(hours=hours)))
    agent.last_seen_at = now
    audit(session=session, actor=f"agent:{agent.username}", action="agent.login", entity="agent",
          entity_id=agent.id)
    return token


def agent_for_token(*, session: Session, token: Optional[str], now: dt.datetime) -> Optional[SignedIn]:
    """The agent logged in with `token`, or None if it is unknown, expired or the agent is inactive.

    Also records that the agent is active now (`last_seen_at`), which is what
    "online" means for the wait a shopper is told.
    """
    if not token or not TOKEN.fullmatch(token):
        return None
    row = session.execute(
        select(AgentSession, Agent).join(Agent, Agent.id == AgentSession.agent_id)
        .where(AgentSession.token_hash == token_hash(token))
    ).first()
    if row is None:
        return None
    # Looked up by the token's SHA-256: timing can tell an attacker nothing about a hash they cannot steer.
    login, agent = row
    if login.expires_at <= now or not agent.active:
        return None
    if agent.last_seen_at is None or now - agent.last_seen_at >= SEEN_RESOLUTION:
        agent.last_seen_at = now
    return SignedIn(agent_id=agent.id, username=agent.username, display_name=agent.display_name)


def end_session(*, session: Session, token: Optional[str]) -> bool:
    """Log out: the token stops working at once.  False when it was not a live login."""
    if not token or not TOKEN.fullmatch(token):
        return False
    result = session.execute(delete(AgentSession).where(AgentSession.token_hash == token_hash(token)))
    return bool(result.rowcount)


def purge_expired_sessions(*, session: Session, now: dt.datetime) -> int:
    """Drop expired logins; returns how many went."""
    result = session.execute(delete(AgentSession).where(AgentSession.expires_at <= now))
    return result.rowcount or 0


# --- the queue ---------------------------------------------------------------------------


def reason_text(reason: str) -> str:
    """The hand-off reason as a sentence for the queue (the wording the handoff record uses)."""
    text = REASONS.get(reason, reason.replace("_", " "))
    return text[:1].upper() + text[1:]


def _iso(value: Optional[dt.datetime]) -> Optional[str]:
    return value.astimezone(dt.timezone.utc).isoformat() if value is not None else None


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


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
    rows = list(session.scalars(select(Handoff).where(Handoff.state.in_(OPEN_STATES))
                                .order_by(Handoff.created_at, Handoff.id)))
    rows.sort(key=lambda h: 0 if h.state == QUEUED else 1)
    agents = _agents_by_id(session, [h.agent_id for h in rows])
    return [describe_handoff(h, now, agents) for h in rows]


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
        update(Handoff).where(Handoff.id == handoff_id, Handoff.state == QUEUED)
        .values(state=CLAIMED, agent_id=agent.agent_id, claimed_at=now)
        .execution_options(synchronize_session=False))
    if result.rowcount != 1:
        session.refresh(handoff)
        if handoff.state == CLAIMED:
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
    if handoff.state in (RESOLVED, RETURNED):
        raise AlreadyTaken(f"This conversation is already {handoff.state}.")
    if handoff.state != CLAIMED:
        raise NotYours("Claim this conversation first.")
    if handoff.agent_id != agent.agent_id:
        raise NotYours(f"{_holder_name(session, handoff)} is handling this conversation.")
    return handoff


def _close(session: Session, handoff_id: int, agent: SignedIn, now: dt.datetime, state: str,
           details: Dict[str, Any]) -> Handoff:
    handoff = require_holder(session=session, handoff_id=handoff_id, agent=agent)
    result = session.execute(
        update(Handoff).where(Handoff.id == handoff_id, Handoff.state == CLAIMED,
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
    return _close(session, handoff_id, agent, now, RESOLVED, {"closing_line": closing_line})


def hand_back(*, session: Session, handoff_id: int, agent: SignedIn, now: dt.datetime) -> Handoff:
    """Give the conversation back to the assistant, which greets the shopper again.

    Raises:
        HandoffNotFound, AlreadyTaken, NotYours: see :func:`require_holder`.
    """
    return _close(session, handoff_id, agent, now, RETURNED, {})


# --- what the agent sees beside the transcript ---------------------------------------------


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

"""Agent accounts and console logins.

* passwords are kept only as argon2id hashes, and a failed login costs the
  same whether the username exists or not, so response times do not reveal
  which accounts exist;
* a login is a random 32-byte token in the agent's cookie; the store keeps
  only its SHA-256, so a copy of the database lets nobody sign in;
* every login attempt is written to the store before its password is
  checked, and counted per username and per client address, so the limit
  holds across parallel requests and across console processes.

Keyword-only functions taking the session they work in; the caller commits.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import math
import re
import secrets
from dataclasses import dataclass
from typing import List, Optional

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from bot.domain.clock import utcnow
from bot.store.models import Agent, AgentSession, LoginAttempt
from bot.store.queries import audit

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

class AgentError(ValueError):
    """An account cannot be created as asked; the message says why, for the person typing."""


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
                  created_at=now or utcnow())
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


# --- the failed-login limit ----------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """A login attempt as recorded in the store, before its password is checked."""

    #: "user:<username>" for an agent's username; "user:#<hash>" for anything else typed there.
    user_key: str
    #: "addr:<client address>".
    address_key: str
    user_row: int
    address_row: int
    #: Whether the username is an agent's (what may be logged; typed passwords are not).
    known: bool


def _user_key(name: str, known: bool) -> str:
    if known:
        return f"user:{name}"
    # What people type as a username is sometimes their password: only a digest goes to the store.
    return "user:#" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def record_login_attempt(*, session: Session, username: str, address: str, now: dt.datetime,
                         window: dt.timedelta) -> Attempt:
    """Write down a login attempt for its username and its client address, as not (yet) successful.

    The caller commits before checking anything, so attempts made at the same
    moment (by this process or another) see each other when they count.
    Attempts older than `window` are dropped on the way: the limit never
    looks further back, and the table stays small without a scheduled job.
    """
    session.execute(delete(LoginAttempt).where(LoginAttempt.created_at <= now - window))
    name = normalise_username(username)
    known = bool(USERNAME.fullmatch(name)) and session.scalars(
        select(Agent.id).where(Agent.username == name)).first() is not None
    user = LoginAttempt(key=_user_key(name, known), succeeded=False, created_at=now)
    place = LoginAttempt(key=f"addr:{address[:200]}", succeeded=False, created_at=now)
    session.add_all([user, place])
    session.flush()
    return Attempt(user_key=str(user.key), address_key=str(place.key), user_row=int(user.id),
                   address_row=int(place.id), known=known)


def _failures(session: Session, key: str, since: dt.datetime) -> List[dt.datetime]:
    return list(session.scalars(
        select(LoginAttempt.created_at)
        .where(LoginAttempt.key == key, LoginAttempt.succeeded.is_(False), LoginAttempt.created_at > since)
        .order_by(LoginAttempt.created_at)))


def login_wait(*, session: Session, attempt: Attempt, now: dt.datetime, window: dt.timedelta,
               per_user: int, per_address: int) -> Optional[int]:
    """None when `attempt` may have its password checked; else the seconds to wait before trying again.

    Counts the attempts within `window` that did not succeed, this one
    included (an attempt in progress counts as a failure), per username and
    per client address.  Over either limit, this attempt's rows are removed
    again (it checked nothing) and the wait is until enough earlier ones
    have left the window for one more.
    """
    since = now - window
    waits = []
    for key, limit in ((attempt.user_key, per_user), (attempt.address_key, per_address)):
        times = _failures(session, key, since)
        if len(times) > limit:
            # One more attempt fits once the len(times) - limit oldest have left the window.
            # (Attempts made at the same moment may be stamped a little later than this one.)
            free_at = times[len(times) - limit - 1] + window
            waits.append(min(math.ceil(window.total_seconds()), max(1, math.ceil((free_at - now).total_seconds()))))
    if not waits:
        return None
    session.execute(delete(LoginAttempt).where(LoginAttempt.id.in_([attempt.user_row, attempt.address_row])))
    return max(waits)


def login_succeeded(*, session: Session, attempt: Attempt, now: dt.datetime, window: dt.timedelta) -> None:
    """The password was right: this username's attempts so far no longer count, nor does this one per address.

    The address's earlier failures still count: one agent logging in does
    not reset what was tried from that address against other usernames.
    """
    session.execute(update(LoginAttempt)
                    .where(LoginAttempt.key == attempt.user_key, LoginAttempt.id <= attempt.user_row,
                           LoginAttempt.created_at > now - window)
                    .values(succeeded=True).execution_options(synchronize_session=False))
    session.execute(update(LoginAttempt).where(LoginAttempt.id == attempt.address_row)
                    .values(succeeded=True).execution_options(synchronize_session=False))

"""Agent accounts, console logins and the hand-off queue in the store, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import hashlib
import statistics
import threading
import time
from decimal import Decimal
from typing import List

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from bot.console import accounts, queue, views
from bot.console.accounts import AgentError, SignedIn
from bot.console.queue import AlreadyTaken, HandoffNotFound, NotYours
from bot.services.handoff import online_agents, open_handoff
from bot.store import db
from bot.store.models import Agent, AgentSession, AuditLog, Customer, Handoff, Order, Shipment, TrackingEvent
from bot.store.queries import carriers_by_code, sync_carriers

T0 = dt.datetime(2026, 11, 25, 10, 0, tzinfo=dt.timezone.utc)
PASSWORD = "correct horse battery"


def add_agent(session, username="alex", name="Alex Jansen", password=PASSWORD) -> SignedIn:
    agent = accounts.create_agent(session=session, username=username, display_name=name, password=password, now=T0)
    session.commit()
    return SignedIn(agent.id, agent.username, agent.display_name)


def add_handoff(session, conversation_id="c1", created_at=T0, reason="asked", channel="widget") -> int:
    handoff = Handoff(conversation_id=conversation_id, channel=channel, reason=reason, summary="", context={},
                      transcript=[], created_at=created_at)
    session.add(handoff)
    session.commit()
    return handoff.id


def audit_actions(session, handoff_id: int) -> List[str]:
    rows = session.scalars(select(AuditLog).where(AuditLog.entity == "handoff",
                                                  AuditLog.entity_id == str(handoff_id)).order_by(AuditLog.id))
    return [f"{row.actor} {row.action}" for row in rows]


# --- accounts and passwords -----------------------------------------------------------------


def test_an_agent_is_stored_with_an_argon2id_hash_never_the_password(session):
    """The store holds an argon2id hash; the password itself appears nowhere."""
    accounts.create_agent(session=session, username="  Alex.Jansen ", display_name=" Alex   Jansen ",
                        password=PASSWORD, now=T0)
    session.commit()
    agent = session.scalars(select(Agent)).one()
    assert agent.username == "alex.jansen" and agent.display_name == "Alex Jansen" and agent.active
    assert agent.password_hash.startswith("$argon2id$") and PASSWORD not in agent.password_hash
    assert session.scalars(select(AuditLog.action).where(AuditLog.entity == "agent")).all() == ["agent.created"]


@pytest.mark.parametrize("username, name, password, message", [
    ("alex", "Alex", "short", "at least 10"),                    # too short a password
    ("alex", "Alex", "x" * 257, "at most 256"),                  # long enough to make hashing a weapon
    ("a", "Alex", PASSWORD, "2 to 80"),                          # too short a username
    ("alex jansen", "Alex", PASSWORD, "letters, digits"),        # a space
    ("-alex", "Alex", PASSWORD, "starting with"),                # starts with punctuation
    ("alex", "   ", PASSWORD, "display name"),                   # no name
    ("alex", "A" * 121, PASSWORD, "at most 120"),                # an essay for a name
])
def test_accounts_that_would_be_unsafe_or_unusable_are_refused(session, username, name, password, message):
    """Short passwords, malformed usernames and empty names are refused with the reason."""
    with pytest.raises(AgentError, match=message):
        accounts.create_agent(session=session, username=username, display_name=name, password=password)
    assert session.scalars(select(Agent)).all() == []


def test_usernames_are_unique_whatever_their_case(session):
    """A second "ALEX" is refused while "alex" exists."""
    add_agent(session)
    with pytest.raises(AgentError, match="already exists"):
        accounts.create_agent(session=session, username="ALEX", display_name="Other", password=PASSWORD)


def test_only_the_right_password_of_an_active_agent_logs_in(session):
    """Right password: the agent.  Wrong password, unknown name, inactive account: None, all alike."""
    add_agent(session)
    assert accounts.authenticate(session=session, username="ALEX ", password=PASSWORD).username == "alex"
    assert accounts.authenticate(session=session, username="alex", password=PASSWORD + "!") is None
    assert accounts.authenticate(session=session, username="alex", password="") is None
    assert accounts.authenticate(session=session, username="nobody", password=PASSWORD) is None
    assert accounts.authenticate(session=session, username="", password=PASSWORD) is None
    session.scalars(select(Agent)).one().active = False
    session.commit()
    assert accounts.authenticate(session=session, username="alex", password=PASSWORD) is None


def test_an_unknown_username_costs_as_much_as_a_wrong_password(session):
    """Both run one argon2 verification, so timing does not reveal which usernames exist."""
    add_agent(session)
    accounts.warm_up()

    def median_s(username: str) -> float:
        runs = []
        for _ in range(7):
            start = time.perf_counter()
            assert accounts.authenticate(session=session, username=username, password="wrong password!") is None
            runs.append(time.perf_counter() - start)
        return statistics.median(runs)

    wrong_password, unknown_user = median_s("alex"), median_s("nobody-here")
    # Without the decoy hash an unknown user would answer ~50x faster (no hashing at all).
    assert unknown_user > 0.4 * wrong_password, (unknown_user, wrong_password)


def test_a_hash_made_with_weaker_parameters_is_upgraded_at_login(session):
    """An old, cheaper hash still logs in, and is replaced by one with today's parameters."""
    agent = Agent(username="old", display_name="Old Timer", created_at=T0,
                  password_hash=PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD))
    session.add(agent)
    session.commit()
    old_hash = agent.password_hash
    assert accounts.authenticate(session=session, username="old", password=PASSWORD) is not None
    session.commit()
    assert agent.password_hash != old_hash and not PasswordHasher().check_needs_rehash(agent.password_hash)


# --- console logins ---------------------------------------------------------------------------


def test_a_login_token_is_random_and_only_its_hash_is_stored(session):
    """Two logins give two 256-bit tokens; the table holds their SHA-256, not the tokens."""
    add_agent(session)
    agent = accounts.authenticate(session=session, username="alex", password=PASSWORD)
    first = accounts.start_session(session=session, agent=agent, now=T0, hours=8)
    second = accounts.start_session(session=session, agent=agent, now=T0, hours=8)
    session.commit()
    assert first != second and len(first) == 43 and accounts.TOKEN.fullmatch(first)
    stored = session.scalars(select(AgentSession.token_hash)).all()
    assert sorted(stored) == sorted(hashlib.sha256(t.encode()).hexdigest() for t in (first, second))
    assert first not in stored and second not in stored


def test_a_login_works_until_it_expires_or_is_ended(session):
    """Valid for AGENT_SESSION_HOURS; not a second longer; logging out ends it at once."""
    signed = add_agent(session)
    agent = session.get(Agent, signed.agent_id)
    token = accounts.start_session(session=session, agent=agent, now=T0, hours=8)
    other = accounts.start_session(session=session, agent=agent, now=T0, hours=8)
    session.commit()
    assert accounts.agent_for_token(session=session, token=token, now=T0 + dt.timedelta(hours=7, minutes=59)) == signed
    assert accounts.agent_for_token(session=session, token=token, now=T0 + dt.timedelta(hours=8)) is None
    assert accounts.end_session(session=session, token=token) is True
    session.commit()
    assert accounts.agent_for_token(session=session, token=token, now=T0) is None
    assert accounts.end_session(session=session, token=token) is False
    assert accounts.agent_for_token(session=session, token=other, now=T0) == signed  # other logins live on


@pytest.mark.parametrize("token", [None, "", "x" * 43 + "=", "short", "a" * 500, "../../etc/passwd" + "a" * 27])
def test_malformed_tokens_are_no_login(session, token):
    """Anything not shaped like a token is refused before the store is asked."""
    add_agent(session)
    assert accounts.agent_for_token(session=session, token=token, now=T0) is None


def test_an_inactive_agents_logins_stop_working(session):
    """Switching an account off ends its live logins too."""
    signed = add_agent(session)
    agent = session.get(Agent, signed.agent_id)
    token = accounts.start_session(session=session, agent=agent, now=T0, hours=8)
    agent.active = False
    session.commit()
    assert accounts.agent_for_token(session=session, token=token, now=T0) is None


def test_expired_logins_are_cleared_when_someone_logs_in(session):
    """Old rows do not pile up: each login removes the expired ones."""
    agent = session.get(Agent, add_agent(session).agent_id)
    accounts.start_session(session=session, agent=agent, now=T0, hours=1)
    session.commit()
    accounts.start_session(session=session, agent=agent, now=T0 + dt.timedelta(hours=2), hours=1)
    session.commit()
    assert len(session.scalars(select(AgentSession)).all()) == 1


def test_using_the_console_marks_the_agent_online(session):
    """Every authenticated request refreshes last_seen_at (at most every 15 s); online means seen lately."""
    alex = session.get(Agent, add_agent(session).agent_id)
    sam = session.get(Agent, add_agent(session, "sam", "Sam Vos").agent_id)
    token = accounts.start_session(session=session, agent=alex, now=T0, hours=8)
    accounts.start_session(session=session, agent=sam, now=T0, hours=8)
    session.commit()
    later = T0 + dt.timedelta(minutes=5)
    assert [a.username for a in online_agents(session=session, now=later, minutes=2)] == []
    accounts.agent_for_token(session=session, token=token, now=later)
    session.commit()
    assert alex.last_seen_at == later
    accounts.agent_for_token(session=session, token=token, now=later + dt.timedelta(seconds=5))
    assert alex.last_seen_at == later  # not rewritten on every poll
    assert [a.username for a in online_agents(session=session, now=later + dt.timedelta(minutes=1),
                                                     minutes=2)] == ["alex"]
    assert online_agents(session=session, now=later + dt.timedelta(minutes=3), minutes=2) == []


# --- the queue --------------------------------------------------------------------------------


def test_the_queue_lists_waiting_conversations_oldest_first_then_those_in_hand(session):
    """Waiting ones first, oldest first, with waiting time and reason; closed ones are gone."""
    alex = add_agent(session)
    newest = add_handoff(session, "c-new", T0 + dt.timedelta(minutes=9), reason="not_understood")
    oldest = add_handoff(session, "c-old", T0, reason="asked", channel="whatsapp")
    held = add_handoff(session, "c-held", T0 - dt.timedelta(minutes=30), reason="high_value")
    closed = add_handoff(session, "c-closed", T0 - dt.timedelta(hours=1))
    queue.claim(session=session, handoff_id=held, agent=alex, now=T0 - dt.timedelta(minutes=20))
    queue.claim(session=session, handoff_id=closed, agent=alex, now=T0)
    queue.resolve(session=session, handoff_id=closed, agent=alex, now=T0)
    session.commit()
    now = T0 + dt.timedelta(minutes=10)
    listed = views.list_queue(session=session, now=now)
    assert [(h["id"], h["state"]) for h in listed] == [(oldest, "queued"), (newest, "queued"), (held, "claimed")]
    assert [h["waiting_seconds"] for h in listed] == [600, 60, 600]  # a claimed one stopped waiting at the claim
    assert listed[0]["channel"] == "whatsapp" and listed[0]["reason_text"] == "The shopper asked for a person"
    assert listed[1]["reason_text"].startswith("The assistant did not understand")
    assert listed[2]["agent_name"] == "Alex Jansen" and listed[0]["agent_name"] is None


def test_a_claim_is_recorded_with_the_agent_time_and_an_audit_row(session):
    """Claiming sets state, agent and time, and says so in the audit log."""
    alex = add_agent(session)
    handoff_id = add_handoff(session)
    claimed = queue.claim(session=session, handoff_id=handoff_id, agent=alex, now=T0 + dt.timedelta(minutes=3))
    session.commit()
    assert (claimed.state, claimed.agent_id, claimed.claimed_at) == ("claimed", alex.agent_id,
                                                                     T0 + dt.timedelta(minutes=3))
    assert audit_actions(session, handoff_id) == ["agent:alex handoff.claimed"]


def test_a_conversation_cannot_be_claimed_twice(session):
    """The second agent is told who has it; claiming again or claiming a closed one is refused too."""
    alex, sam = add_agent(session), add_agent(session, "sam", "Sam Vos")
    handoff_id = add_handoff(session)
    queue.claim(session=session, handoff_id=handoff_id, agent=alex, now=T0)
    session.commit()
    with pytest.raises(AlreadyTaken, match="Alex Jansen claimed this conversation first"):
        queue.claim(session=session, handoff_id=handoff_id, agent=sam, now=T0)
    with pytest.raises(AlreadyTaken, match="already claimed"):
        queue.claim(session=session, handoff_id=handoff_id, agent=alex, now=T0)
    queue.hand_back(session=session, handoff_id=handoff_id, agent=alex, now=T0)
    session.commit()
    with pytest.raises(AlreadyTaken, match="already returned"):
        queue.claim(session=session, handoff_id=handoff_id, agent=sam, now=T0)
    with pytest.raises(HandoffNotFound):
        queue.claim(session=session, handoff_id=handoff_id + 1000, agent=sam, now=T0)
    assert session.get(Handoff, handoff_id).agent_id == alex.agent_id
    assert audit_actions(session, handoff_id) == ["agent:alex handoff.claimed", "agent:alex handoff.returned"]


def test_agents_claiming_at_the_same_moment_get_one_winner(engine):
    """Four agents click Claim on the same conversation at once: exactly one of them gets it."""
    with db.session_factory(engine)() as session:
        team = [add_agent(session, f"agent{n}", f"Agent {n}") for n in range(4)]

    def click(agent: SignedIn, start: threading.Barrier, handoff_id: int, outcomes: list) -> None:
        start.wait()
        try:
            with db.session_scope(engine) as session:
                queue.claim(session=session, handoff_id=handoff_id, agent=agent, now=T0)
            outcomes.append(("won", agent.agent_id))
        except AlreadyTaken:
            outcomes.append(("lost", agent.agent_id))

    for round_ in range(5):
        with db.session_factory(engine)() as session:
            handoff_id = add_handoff(session, f"race-{round_}")
        start, outcomes = threading.Barrier(len(team)), []
        threads = [threading.Thread(target=click, args=(agent, start, handoff_id, outcomes)) for agent in team]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        winners = [agent_id for outcome, agent_id in outcomes if outcome == "won"]
        assert len(outcomes) == len(team) and len(winners) == 1, outcomes
        with db.session_factory(engine)() as session:
            assert session.get(Handoff, handoff_id).agent_id == winners[0]
            assert len(audit_actions(session, handoff_id)) == 1


def test_only_the_agent_holding_a_conversation_may_close_it(session):
    """Unclaimed: claim first.  Held by someone else: refused, naming them.  Closed: refused."""
    alex, sam = add_agent(session), add_agent(session, "sam", "Sam Vos")
    handoff_id = add_handoff(session)
    with pytest.raises(NotYours, match="Claim this conversation first"):
        queue.require_holder(session=session, handoff_id=handoff_id, agent=alex)
    queue.claim(session=session, handoff_id=handoff_id, agent=alex, now=T0)
    session.commit()
    for close in (queue.resolve, queue.hand_back):
        with pytest.raises(NotYours, match="Alex Jansen is handling"):
            close(session=session, handoff_id=handoff_id, agent=sam, now=T0)
    assert queue.require_holder(session=session, handoff_id=handoff_id, agent=alex).state == "claimed"
    done = queue.resolve(session=session, handoff_id=handoff_id, agent=alex, now=T0 + dt.timedelta(minutes=7),
                          closing_line=True)
    session.commit()
    assert (done.state, done.closed_at) == ("resolved", T0 + dt.timedelta(minutes=7))
    with pytest.raises(AlreadyTaken, match="already resolved"):
        queue.hand_back(session=session, handoff_id=handoff_id, agent=alex, now=T0)
    assert audit_actions(session, handoff_id) == ["agent:alex handoff.claimed", "agent:alex handoff.resolved"]
    resolved = session.scalars(select(AuditLog).where(AuditLog.action == "handoff.resolved")).one()
    assert resolved.details["closing_line"] is True


def test_handing_back_closes_the_handoff_and_a_new_one_can_open_later(session, settings):
    """After a hand-back the conversation may be handed over again: a fresh handoff, queued."""
    alex = add_agent(session)
    first, _ = open_handoff(session=session, conversation_id="again", channel="widget", reason="asked",
                            order_number=None, transcript=[], settings=settings, now=T0)
    session.commit()
    queue.claim(session=session, handoff_id=first.id, agent=alex, now=T0)
    queue.hand_back(session=session, handoff_id=first.id, agent=alex, now=T0)
    session.commit()
    second, created = open_handoff(session=session, conversation_id="again", channel="widget", reason="asked",
                                   order_number=None, transcript=[], settings=settings, now=T0)
    session.commit()
    assert created and second.id != first.id
    assert [h["id"] for h in views.list_queue(session=session, now=T0)] == [second.id]


def test_the_detail_has_the_order_its_shipments_and_their_scans_newest_first(session, settings):
    """Beside the transcript: the verified order, each shipment's state and every carrier scan."""
    sync_carriers(session=session)
    customer = Customer(email="noor@example.com", name="Noor Bakker", phone="+31 6 1234 5678")
    order = Order(number="WS-7001", customer=customer, placed_at=T0 - dt.timedelta(days=6),
                  promised_date=dt.date(2026, 11, 23), ship_name="Noor Bakker", ship_line1="Prinsengracht 12",
                  ship_city="Amsterdam", ship_postcode="1015 DX", ship_country="NL", value=Decimal("84.50"),
                  currency="EUR")
    shipment = Shipment(order=order, carrier=carriers_by_code(session=session)["dhl"], tracking_number="JVGL7001",
                        status="in_transit", shipped_at=T0 - dt.timedelta(days=5))
    scans = [("PU", "Picked up", "in_transit"), ("AR", "Arrived at hub", "in_transit")]
    for n, (code, text, status) in enumerate(scans):
        shipment.events.append(TrackingEvent(event_key=f"k{n}", occurred_at=T0 - dt.timedelta(days=5 - n),
                                             raw_code=code, raw_text=text, location="Utrecht", status=status))
    session.add_all([order, shipment])
    session.flush()
    handoff, _ = open_handoff(session=session, conversation_id="ctx", channel="widget", reason="asked",
                              order_number="WS-7001", transcript=[{"from": "shopper", "text": "hello", "at": 1}],
                              settings=settings, now=T0)
    session.commit()
    detail = views.handoff_detail(session=session, handoff_id=handoff.id, settings=settings, now=T0)
    assert detail["order_number"] == "WS-7001" and detail["transcript_at_handoff"][0]["text"] == "hello"
    shown = detail["order"]
    assert (shown["customer"], shown["email"], shown["value"], shown["currency"]) == (
        "Noor Bakker", "noor@example.com", "84.50", "EUR")
    assert shown["address"] == ["Noor Bakker", "Prinsengracht 12", "1015 DX Amsterdam", "NL"]
    parcel = shown["shipments"][0]
    assert parcel["carrier"] == "DHL"
    assert parcel["tracking_number"] == "JVGL7001" and "JVGL7001" in parcel["tracking_url"]
    assert parcel["is_late"] and parcel["days_late"] >= 1
    assert [e["text"] for e in parcel["events"]] == ["Arrived at hub", "Picked up"]
    with pytest.raises(HandoffNotFound):
        views.handoff_detail(session=session, handoff_id=2**40, settings=settings, now=T0)

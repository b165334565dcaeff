"""Handing over to a person: who can answer and when, the pause, the reason, the helpdesk copy."""

from __future__ import annotations

import datetime as dt
import json
import threading
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import select

from actions.address import ActionSubmitAddress
from actions.common import _HELPDESK_TASKS
from actions.context import ActionContext, use_context
from actions.handoff import ActionAffirm, ActionFallback, ActionHandoff
from bot import config as bot_config
from bot.config import load_settings
from bot.domain.agent_hours import parse_hours
from bot.services.handoff import availability
from bot.services.helpdesk import SIGNATURE_HEADER
from bot.store import db
from bot.store.models import Agent, AuditLog, Handoff

from .helpers.rasa import rendered
from .helpers.signing import signature
from .helpers.waits import wait_for
from .test_actions import DOMAIN, run, tracker

ZONE = "Europe/Amsterdam"
# Wednesday 25 Nov 2026, in the shop's zone.
WED_NOON = dt.datetime(2026, 11, 25, 11, 0, tzinfo=dt.timezone.utc)   # 12:00 local
WED_NIGHT = dt.datetime(2026, 11, 25, 21, 0, tzinfo=dt.timezone.utc)  # 22:00 local
FRI_NIGHT = dt.datetime(2026, 11, 27, 21, 0, tzinfo=dt.timezone.utc)  # 22:00 local


def settings(**environ: str):
    return load_settings(environ={"AGENT_HOURS": "mon-fri 09:00-17:30", **environ}, env_file=Path("/nonexistent"))


@pytest.mark.parametrize("text, local, is_open", [
    ("mon-fri 09:00-17:30", dt.datetime(2026, 11, 25, 9, 0), True),      # opening minute
    ("mon-fri 09:00-17:30", dt.datetime(2026, 11, 25, 17, 30), False),   # closing minute
    ("mon-fri 09:00-17:30", dt.datetime(2026, 11, 28, 12, 0), False),    # Saturday
    ("mon-fri 09:00-17:30; sat 10:00-14:00", dt.datetime(2026, 11, 28, 12, 0), True),
    ("fri-mon 20:00-24:00", dt.datetime(2026, 11, 29, 23, 59), True),    # a range across the week's end
    ("always", dt.datetime(2026, 11, 29, 3, 0), True),
])
def test_agent_hours_are_read_as_a_shop_writes_them(text, local, is_open):
    """Days, ranges and several spans; 'always' for a round-the-clock team."""
    assert parse_hours(text).is_open(local) is is_open


@pytest.mark.parametrize("text", ["mon-fri", "funday 09:00-17:00", "mon 18:00-09:00", "mon 25:00-26:00", ""])
def test_unreadable_agent_hours_stop_start_up_with_the_setting_named(text):
    """A typo in AGENT_HOURS is reported at start-up, not discovered by a waiting shopper."""
    with pytest.raises(bot_config.SettingsError, match="AGENT_HOURS"):
        load_settings(environ={"AGENT_HOURS": text}, env_file=Path("/nonexistent"))


def _agent(session, name: str, seen: dt.datetime) -> None:
    session.add(Agent(username=name, display_name=name.title(), password_hash="x", last_seen_at=seen))


def test_with_agents_online_the_shopper_is_told_the_wait(engine):
    """In hours with agents online: the queue ahead shared among them, a few minutes each."""
    config = settings(AGENT_MINUTES_PER_CONVERSATION="6")
    with db.session_scope(engine) as session:
        _agent(session, "anna", WED_NOON - dt.timedelta(seconds=30))
        for number in range(3):
            session.add(Handoff(conversation_id=f"c{number}", channel="rest", reason="asked", state="queued",
                                created_at=WED_NOON))
    with db.session_scope(engine) as session:
        found = availability(session=session, settings=config, now=WED_NOON)
        assert (found.response, found.wording, found.agents_online) == ("utter_handoff", {"wait": "18 minutes"}, 1)
        _agent(session, "ben", WED_NOON)
        session.flush()
        assert availability(session=session, settings=config, now=WED_NOON).wording == {"wait": "9 minutes"}


def test_in_hours_with_nobody_online_someone_still_replies_within_the_promised_time(engine):
    """Opening hours are a promise: with no console open, AGENT_REPLY_MINUTES, never "nobody can answer"."""
    with db.session_scope(engine) as session:
        _agent(session, "anna", WED_NOON - dt.timedelta(hours=1))  # quiet long ago: not online
    with db.session_scope(engine) as session:
        found = availability(session=session, settings=settings(AGENT_REPLY_MINUTES="20"), now=WED_NOON)
    assert (found.response, found.wording, found.wait_minutes) == ("utter_handoff", {"wait": "20 minutes"}, 20)
    text = rendered({"response": found.response, **found.wording}, DOMAIN)
    assert "Someone will reply right here within 20 minutes." in text
    assert "Nobody" not in text and "closed" not in text


def test_just_before_closing_the_shopper_hears_the_closing_time_and_the_next_opening(engine):
    """17:15 with a 30-minute promise and closing at 17:30: no promise the hours cannot keep."""
    quarter_past_five = dt.datetime(2026, 11, 25, 16, 15, tzinfo=dt.timezone.utc)  # 17:15 local
    with db.session_scope(engine) as session:
        found = availability(session=session, settings=settings(), now=quarter_past_five)
    assert found.response == "utter_handoff_closing" and found.in_hours
    assert found.wording == {"closes": "17:30", "when": "from 09:00 tomorrow"}
    text = rendered({"response": found.response, **found.wording}, DOMAIN)
    assert "We close at 17:30 today, so if nobody gets to it before then, we'll reply right here from 09:00 " \
           "tomorrow." in text


@pytest.mark.parametrize("now, when", [
    (WED_NIGHT, "from 09:00 tomorrow"),
    (FRI_NIGHT, "from 09:00 on Mon 30 Nov"),
    (dt.datetime(2026, 11, 26, 6, 0, tzinfo=dt.timezone.utc), "from 09:00 today"),  # 07:00 local
])
def test_outside_hours_the_shopper_hears_when_the_team_is_back(engine, now, when):
    """Outside agent hours the answer says we're closed and names the next opening, in the shop's time zone."""
    with db.session_scope(engine) as session:
        _agent(session, "anna", now)  # online, but it is not opening time
    with db.session_scope(engine) as session:
        found = availability(session=session, settings=settings(), now=now)
    assert found.response == "utter_handoff_later" and found.wording == {"when": when}
    assert found.wait_minutes is None and not found.in_hours
    text = rendered({"response": found.response, **found.wording}, DOMAIN)
    assert f"We're closed now; we'll reply right here {when}." in text


def test_the_handoff_answers_render_with_their_wording():
    """Each response carries the variables the availability fills, and none says nobody can answer."""
    assert "{wait}" in DOMAIN["responses"]["utter_handoff"][0]["text"]
    assert "{when}" in DOMAIN["responses"]["utter_handoff_later"][0]["text"]
    assert "{closes}" in DOMAIN["responses"]["utter_handoff_closing"][0]["text"]
    for name in ("utter_handoff", "utter_handoff_closing", "utter_handoff_later"):
        assert "Nobody can answer" not in DOMAIN["responses"][name][0]["text"]


async def test_handing_over_pauses_the_bot_and_tells_the_shopper(shop):
    """The handoff action stops the bot for this conversation (Rasa's pause) after telling when."""
    events, messages = await run(ActionHandoff(), tracker("let me talk to a person", "human_handoff"))
    assert {"event": "pause", "timestamp": None} in events
    assert messages[-1]["response"].startswith("utter_handoff")
    assert "passed your conversation" in rendered(messages[-1], DOMAIN)  # every variable given


async def test_accepting_the_offer_after_an_impossible_address_change_keeps_that_reason(shop):
    """'Yes' to the offer made because the address can't change is recorded as address_impossible."""
    offer = DOMAIN["responses"]["utter_offer_human"][0]["text"]
    track = tracker("yes", "affirm", slots={"handoff_reason": "address_impossible"},
                    history=[{"event": "bot", "text": offer}])
    events, _ = await run(ActionAffirm(), track)
    assert {"event": "pause", "timestamp": None} in events
    with db.session_factory(shop["engine"])() as session:
        assert session.scalars(select(Handoff.reason).where(Handoff.conversation_id == track.sender_id)).one() \
            == "address_impossible"
    # Later, an unrelated request for a person is simply "asked".
    later = tracker("can I talk to someone", "human_handoff", slots={"handoff_reason": "address_impossible"},
                    history=[{"event": "bot", "text": "Anything else I can help with?"}])
    await run(ActionHandoff(), later)
    with db.session_factory(shop["engine"])() as session:
        assert session.scalars(select(Handoff.reason).where(Handoff.conversation_id == later.sender_id)).one() \
            == "asked"


async def test_a_yes_after_two_misunderstandings_is_handed_over_as_not_understood(shop):
    """The fallback's offer remembers why it was made."""
    miss = {"event": "user", "text": "blorp", "parse_data": {"intent": {"name": "nlu_fallback"}}}
    events, _ = await run(ActionFallback(), tracker("blorp again", "nlu_fallback", history=[miss]))
    assert {"event": "slot", "timestamp": None, "name": "handoff_reason", "value": "not_understood"} in events
    offer = DOMAIN["responses"]["utter_offer_human"][0]["text"]
    track = tracker("yes", "affirm", slots={"handoff_reason": "not_understood"},
                    history=[miss, {"event": "bot", "text": offer}])
    await run(ActionAffirm(), track)
    with db.session_factory(shop["engine"])() as session:
        assert session.scalars(select(Handoff.reason).where(Handoff.conversation_id == track.sender_id)).one() \
            == "not_understood"


async def test_an_impossible_address_change_offers_a_person_with_the_reason(shop):
    """After shipment with a carrier that can't redirect, the offer carries address_impossible."""
    order = shop["orders"]["shipped_no_redirect"]
    slots = {"verified_order": order["order_number"], "address_confirmed": True, "new_street": "Kerkstraat 1",
             "new_city": "Utrecht", "new_postcode": "3511 AB", "new_country": "NL"}
    events, messages = await run(ActionSubmitAddress(), tracker("yes", "affirm", slots=slots))
    assert messages[-1]["response"] == "utter_offer_human"
    assert {"event": "slot", "timestamp": None, "name": "handoff_reason", "value": "address_impossible"} in events


class Helpdesk:
    """A helpdesk on loopback: answers `status` to every POST and keeps what it got."""

    def __init__(self, status: int = 200):
        self.status, self.received = status, []
        desk = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                desk.received.append((dict(self.headers), body))
                self.send_response(desk.status)
                self.end_headers()

            def log_message(self, *_):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/handoff"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def helpdesk_env(shop):
    """Call with a Helpdesk: the actions then run with HELPDESK_URL and HELPDESK_SECRET set for it."""
    with ExitStack() as stack:
        def configure(desk: Helpdesk) -> None:
            configured = load_settings(environ={"HELPDESK_URL": desk.url, "HELPDESK_SECRET": "desk-secret"},
                                       env_file=Path("/nonexistent"))
            stack.enter_context(use_context(ActionContext(settings=configured,
                                                          sessions=db.session_factory(shop["engine"]))))

        yield configure


async def _status_of(engine, conversation_id: str, want: str, timeout: float = 30.0) -> Handoff:
    """The conversation's handoff, once its helpdesk status is `want`."""
    def check():
        with db.session_factory(engine)() as session:
            handoff = session.scalars(select(Handoff).where(Handoff.conversation_id == conversation_id)).one()
        return handoff if handoff.helpdesk_status == want else None

    return await wait_for(check, what=f"the helpdesk status {want!r} of {conversation_id}", timeout=timeout,
                          every=0.1)


@pytest.mark.slow  # starts a helpdesk server on loopback
async def test_a_new_handoff_is_posted_signed_to_the_helpdesk(shop, helpdesk_env):
    """The helpdesk gets the handoff as JSON with an HMAC-SHA256 signature it can check."""
    desk = Helpdesk()
    helpdesk_env(desk)
    try:
        order = shop["orders"]["lost"]
        track = tracker("I want a person", "human_handoff", slots={"verified_order": order["order_number"]})
        await run(ActionHandoff(), track)
        handoff = await _status_of(shop["engine"], track.sender_id, "sent")
        assert handoff.helpdesk_status == "sent" and len(desk.received) == 1
        headers, body = desk.received[0]
        assert headers[SIGNATURE_HEADER] == signature(body, "desk-secret")
        sent = json.loads(body)
        assert (sent["handoff_id"], sent["conversation_id"], sent["reason"]) == (handoff.id, track.sender_id, "asked")
        assert order["order_number"] in sent["summary"] and sent["transcript"][-1]["text"] == "I want a person"
        await wait_for(lambda: not _HELPDESK_TASKS, what="the first helpdesk copy to finish")
        await run(ActionHandoff(), track)  # the same open handoff: no second copy
        assert not _HELPDESK_TASKS, "a second helpdesk copy was started"
        assert len(desk.received) == 1
    finally:
        desk.close()


@pytest.mark.slow  # starts a helpdesk server on loopback and waits out the real retry backoff
async def test_a_failing_helpdesk_never_loses_the_handoff(shop, helpdesk_env):
    """Retried, then recorded as failed; the handoff and the shopper's answer are unaffected."""
    desk = Helpdesk(status=503)
    helpdesk_env(desk)
    try:
        track = tracker("agent please", "human_handoff")
        events, messages = await run(ActionHandoff(), track)
        assert {"event": "pause", "timestamp": None} in events and messages[-1]["response"].startswith("utter_handoff")
        handoff = await _status_of(shop["engine"], track.sender_id, "failed")
        assert handoff.helpdesk_status == "failed" and handoff.state == "queued"
        assert len(desk.received) == 4  # every try
        with db.session_factory(shop["engine"])() as session:
            assert session.scalars(select(AuditLog.action).where(AuditLog.entity == "handoff",
                                                                 AuditLog.entity_id == str(handoff.id))).all() \
                == ["handoff.created", "handoff.helpdesk_failed"]
    finally:
        desk.close()


def test_the_agents_transcript_shows_a_proactive_update_as_one_and_not_its_trigger():
    from bot.services.handoff import transcript

    events = [
        {"event": "user", "text": "where is WS-1003", "timestamp": 1_796_000_000,
         "parse_data": {"intent": {"name": "order_status"}}},
        {"event": "bot", "text": "It's on its way.", "timestamp": 1_796_000_001},
        {"event": "user", "text": "EXTERNAL: EXTERNAL_tracking_update", "timestamp": 1_796_000_100,
         "parse_data": {"intent": {"name": "EXTERNAL_tracking_update"},
                        "entities": [{"entity": "notification_id", "value": "4"}]}},
        {"event": "bot", "text": "Good news: order WS-1003 is out for delivery.", "timestamp": 1_796_000_101},
        {"event": "user", "text": "great", "timestamp": 1_796_000_200, "parse_data": {"intent": {"name": "thanks"}}},
        {"event": "bot", "text": "You're welcome!", "timestamp": 1_796_000_201},
    ]
    lines = transcript(events)
    assert [(line["from"], line["text"], line.get("update", False)) for line in lines] == [
        ("shopper", "where is WS-1003", False),
        ("bot", "It's on its way.", False),
        ("bot", "Good news: order WS-1003 is out for delivery.", True),
        ("shopper", "great", False),
        ("bot", "You're welcome!", False),
    ]

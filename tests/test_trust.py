"""The trust boundaries, tried as an attacker on this machine would: over HTTP, against the running servers.

Each test is one finding of a security review; each failed on the code before the fix.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any, Dict, List

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from bot.store import db
from bot.store.models import Handoff, Order, Verification

from .conftest import ACTION_TOKEN
from .helpers.shopper import rest_say, tracker
from .test_whatsapp import Shopper as WhatsAppShopper

pytestmark = pytest.mark.slow


def sender() -> str:
    return f"trust-{uuid.uuid4().hex[:12]}"


def forged_call(order_number: str, action: str = "action_continue_job") -> Dict[str, Any]:
    """What Rasa would send the action server for a conversation that had verified `order_number`."""
    return {
        "next_action": action, "sender_id": "rest:attacker", "version": "3.6.2",
        "tracker": {"sender_id": "rest:attacker", "slots": {"verified_order": order_number, "pending_job": "status"},
                    "latest_message": {"text": "where is it", "intent": {"name": "order_status"}, "entities": []},
                    "events": [], "paused": False, "followup_action": None, "active_loop": {},
                    "latest_action_name": "action_listen"},
        "domain": {},
    }


def action_url(assistant: Dict[str, Any], path: str = "/webhook") -> str:
    return f"http://127.0.0.1:{assistant['env']['ACTION_PORT']}{path}"


# 1. The action server trusts whatever tracker it is sent.

@pytest.mark.parametrize("headers", [
    {},                                                          # no token at all
    {"Authorization": "Bearer not-the-token"},                   # a wrong one
    {"Authorization": f"Basic {ACTION_TOKEN}"},                   # the right secret in the wrong scheme
    {"Content-Type": "text/plain"},                              # what a web page can send without asking
])
def test_the_action_server_runs_nothing_for_a_caller_without_its_token(assistant, headers):
    """A made-up tracker claiming a verified order gets 401 and no order facts, however it is sent."""
    order = assistant["orders"]["in_transit_on_time"]
    answer = httpx.post(action_url(assistant), content=json.dumps(forged_call(order["order_number"])),
                        headers=headers, timeout=30)
    assert answer.status_code == 401
    assert order["order_number"] not in answer.text and "Tracking" not in answer.text
    assert httpx.get(action_url(assistant, "/actions"), headers=headers, timeout=30).status_code == 401
    assert httpx.get(action_url(assistant, "/health"), timeout=30).status_code == 200  # the open door stays open
    assert httpx.post(action_url(assistant, "/health"), timeout=30).status_code == 405  # and only for GET


def test_with_the_token_a_forged_slot_still_reveals_nothing(assistant):
    """Even a caller holding the token (a compromised replica) gets no order without a proof in the store."""
    order = assistant["orders"]["in_transit_on_time"]
    answer = httpx.post(action_url(assistant), json=forged_call(order["order_number"]),
                        headers={"Authorization": f"Bearer {ACTION_TOKEN}"}, timeout=30)
    assert answer.status_code == 200
    assert order["order_number"] not in answer.text and "Tracking" not in answer.text
    assert "utter_verification_needed" in answer.text


# 2. REST can speak as any shopper.

def test_rest_cannot_speak_as_a_whatsapp_shopper(assistant, fake_graph):
    """A shopper verifies on WhatsApp; REST naming their number as sender learns nothing of the order."""
    order = assistant["orders"]["late_with_reason"]
    shopper = WhatsAppShopper(assistant, fake_graph)
    shopper.say(f"where is {order['order_number']}? my email is {order['email']}")
    shopper.expect("Thanks, that matches")
    said = " ".join(rest_say(assistant["url"], shopper.wa_id, "where is my order?"))
    assert order["order_number"] not in said and "order number" in said.lower()
    # and REST cannot make its own conversation look like a WhatsApp one to the console
    caller = sender()
    answer = httpx.post(f"{assistant['url']}/webhooks/rest/webhook", timeout=60,
                        json={"sender": caller, "message": "hi", "input_channel": "whatsapp",
                              "metadata": {"agent": "Mallory"}})
    assert answer.status_code == 200
    found = tracker(assistant["url"], f"rest:{caller}", assistant["token"])
    assert found["latest_input_channel"] == "rest"
    assert all((event.get("metadata") or {}).get("agent") is None for event in found["events"])


@pytest.mark.parametrize("body", [
    {"sender": {"id": "x"}, "message": "hi"},
    {"sender": "", "message": "hi"},
    {"sender": "x" * 201, "message": "hi"},
    {"sender": "x", "message": None},
    ["not", "an", "object"],
    {"sender": "x", "message": "where is my order " * 2000},   # a megabyte-style message holds the server
])
def test_rest_refuses_bodies_it_cannot_attribute_with_a_clear_400(assistant, body):
    """A body without a usable sender or message is a 400 naming the field, never a 500."""
    answer = httpx.post(f"{assistant['url']}/webhooks/rest/webhook", json=body, timeout=30)
    assert answer.status_code in (400, 413)
    assert "sender" in answer.text or "message" in answer.text or "JSON" in answer.text


# 3. and 4. Strangers lock the real shopper out; one email against every order number.

def spare_orders(assistant: Dict[str, Any], first: int, count: int) -> List[Dict[str, str]]:
    """Demo orders beyond the showcase (WS-1101 onwards), which no other test uses.

    Guessing pauses an order's postcode or an email for an hour in the suite's
    shared store, so these tests guess only on orders of their own: `first`
    is an offset that keeps the tests apart, and emails repeat over customers,
    so every order returned has an email not used by an earlier one.
    """
    engine = db.make_engine(assistant["database_url"])
    try:
        with db.session_factory(engine)() as session:
            rows = session.scalars(select(Order).where(Order.number >= "WS-1101").order_by(Order.number)
                                   .options(selectinload(Order.customer))).all()
            found, emails = [], set()
            for order in rows[first:]:
                if order.customer.email in emails:
                    continue
                emails.add(order.customer.email)
                found.append({"order_number": order.number, "email": order.customer.email,
                              "postcode": order.ship_postcode})
                if len(found) == count:
                    return found
    finally:
        engine.dispose()
    raise AssertionError(f"the demo shop has fewer than {count} spare orders from {first}")


def count_handoffs(assistant: Dict[str, Any]) -> int:
    engine = db.make_engine(assistant["database_url"])
    try:
        with db.session_factory(engine)() as session:
            return int(session.scalar(select(func.count()).select_from(Handoff)) or 0)
    finally:
        engine.dispose()


def test_strangers_guessing_cannot_lock_out_the_owner_or_fill_the_queue(assistant):
    """Wrong proofs from fresh ids pause the postcode; the owner's email still works; no hand-off is opened."""
    (order,) = spare_orders(assistant, 0, 1)
    before = count_handoffs(assistant)
    for _ in range(6):
        rest_say(assistant["url"], sender(), f"where is {order['order_number']}? postcode 9999 ZZ")
    said = " ".join(rest_say(assistant["url"], sender(), f"where is {order['order_number']}? {order['email']}"))
    assert "that matches" in said and order["order_number"] in said
    said = " ".join(rest_say(assistant["url"], sender(), f"where is {order['order_number']}? {order['postcode']}"))
    assert "email address it was placed with" in said and "that matches" not in said
    assert count_handoffs(assistant) == before


def test_a_locked_conversation_is_offered_a_person_once(assistant):
    """Three failures lock the conversation; it is offered a person, and accepting opens one hand-off."""
    (order,) = spare_orders(assistant, 20, 1)
    caller = sender()
    for guess in ("a@example.net", "b@example.net", "c@example.net"):
        said = " ".join(rest_say(assistant["url"], caller, f"where is {order['order_number']}? {guess}"))
    assert "any more details" in said and "colleague" in said
    before = count_handoffs(assistant)
    rest_say(assistant["url"], caller, "yes")
    assert count_handoffs(assistant) == before + 1


def test_one_email_cannot_be_tried_against_every_order_number(assistant):
    """After the shop-wide limit the email proves nothing, even for its own order, and the shopper is told."""
    victim, *others = spare_orders(assistant, 40, 11)
    for other in others:
        rest_say(assistant["url"], sender(), f"where is {other['order_number']}? {victim['email']}")
    said = " ".join(rest_say(assistant["url"], sender(), f"where is {victim['order_number']}? {victim['email']}"))
    assert "too many failed checks" in said and "that matches" not in said
    assert "Tracking" not in said


# 5. and 6. A verification never ends; the Rasa HTTP API opens with the placeholder.

def test_a_new_session_asks_for_the_proof_again(assistant):
    """After action_session_start (a new session), the same conversation must prove the order again."""
    order = assistant["orders"]["out_for_delivery"]
    caller = sender()
    said = " ".join(rest_say(assistant["url"], caller, f"where is {order['order_number']}? {order['email']}"))
    assert "that matches" in said
    started = httpx.post(f"{assistant['url']}/conversations/rest:{caller}/execute",
                         params={"token": assistant["token"]}, json={"name": "action_session_start"}, timeout=60)
    assert started.status_code == 200, started.text
    said = " ".join(rest_say(assistant["url"], caller, "where is it now?"))
    assert "email address on the order, or the delivery postcode" in said and "Tracking" not in said
    said = " ".join(rest_say(assistant["url"], caller, order["email"]))
    assert "that matches" in said and "Tracking" in said  # the order number carried over; only the proof is asked


def test_a_slot_appended_through_the_api_proves_nothing(assistant):
    """Even with the API token, writing verified_order into a tracker reveals no order."""
    order = assistant["orders"]["lost"]
    caller = sender()
    rest_say(assistant["url"], caller, "hi")
    appended = httpx.post(f"{assistant['url']}/conversations/rest:{caller}/tracker/events",
                          params={"token": assistant["token"]}, timeout=30,
                          json=[{"event": "slot", "name": "verified_order", "value": order["order_number"]}])
    assert appended.status_code == 200
    said = " ".join(rest_say(assistant["url"], caller, "where is my order?"))
    assert "Tracking" not in said and "lost" not in said.lower()
    engine = db.make_engine(assistant["database_url"])
    try:
        with db.session_factory(engine)() as session:
            assert session.scalars(select(Verification).where(
                Verification.conversation_id == f"rest:{caller}")).first() is None
    finally:
        engine.dispose()


def test_the_api_refuses_other_origins_and_the_token_is_on_no_command_line(assistant):
    """CORS allows only the assistant's own pages by default, and no process shows the token in its arguments."""
    status = httpx.get(f"{assistant['url']}/status", params={"token": assistant["token"]},
                       headers={"Origin": "http://evil.example"}, timeout=30)
    assert status.status_code == 200 and "access-control-allow-origin" not in status.headers
    ours = f"RASA_PORT={assistant['env']['RASA_PORT']}".encode()
    checked = 0
    for process in Path("/proc").glob("[0-9]*"):
        try:
            if ours not in (process / "environ").read_bytes().split(b"\0"):
                continue  # another program on this machine
            arguments = (process / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        checked += 1
        assert assistant["token"].encode() not in arguments, f"the API token is on the command line of {process}"
        assert ACTION_TOKEN.encode() not in arguments, f"the action server token is on the command line of {process}"
    assert checked >= 3  # the runner, the action server, Rasa and the console
    assert all(assistant["token"] not in line for line in assistant["output"])


def test_a_common_postcode_cannot_be_sprayed_across_order_numbers(assistant):
    """Trying one postcode against many order numbers from fresh ids: it soon proves nothing, for any order."""
    engine = db.make_engine(assistant["database_url"])
    try:
        with db.session_factory(engine)() as session:
            rows = session.execute(select(Order.number, Order.ship_postcode).where(Order.number >= "WS-1201")
                                   .order_by(Order.number)).all()
    finally:
        engine.dispose()
    by_postcode: Dict[str, List[str]] = {}
    for number, postcode in rows:
        by_postcode.setdefault(postcode, []).append(number)
    postcode, owners = max(by_postcode.items(), key=lambda item: len(item[1]))
    strangers = [number for number, other in rows if other != postcode][:10]
    for number in strangers:
        said = " ".join(rest_say(assistant["url"], sender(), f"where is {number}? {postcode}"))
        assert "that matches" not in said
    said = " ".join(rest_say(assistant["url"], sender(), f"where is {owners[0]}? {postcode}"))
    assert "that matches" not in said and "email address it was placed with" in said

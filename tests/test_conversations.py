"""Whole conversations against the trained model: test stories, and the real servers over REST."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from .helpers.servers import MODEL, ROOT
from .helpers.shopper import rest_say, tracker

RASA = str(Path(sys.executable).parent / "rasa")


@pytest.mark.slow  # `rasa test core` loads the trained model
def test_conversation_stories_are_predicted_exactly(tmp_path):
    """`rasa test core` on tests/stories passes with --fail-on-prediction-errors."""
    assert MODEL.is_file(), "no trained model: `make test` trains it first (or run `make train`)"
    result = subprocess.run([RASA, "test", "core", "--stories", "tests/stories", "--model", str(MODEL),
                             "--fail-on-prediction-errors", "--out", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=900)
    failed = (tmp_path / "failed_test_stories.yml")
    details = failed.read_text() if failed.is_file() else ""
    assert result.returncode == 0, (result.stdout[-2000:] + result.stderr[-2000:] + details)[-6000:]


@pytest.fixture(scope="module")
def server(assistant):
    return assistant


class Chat:
    def __init__(self, server):
        self.server, self.sender = server, f"shopper-{uuid.uuid4().hex[:8]}"

    def say(self, text: str) -> str:
        return "\n".join(rest_say(self.server["url"], self.sender, text))

    def slot(self, name: str):
        return tracker(self.server["url"], self.sender, self.server["token"])["slots"].get(name)


# scenario -> words the status answer must contain
OUTCOMES = {
    "not_shipped": "hasn't shipped yet",
    "in_transit_on_time": "on its way",
    "out_for_delivery": "out for delivery",
    "delivered": "delivered it",
    "failed_attempt": "tried to deliver",
    "available_for_pickup": "pickup point",
    "exception": "customs",
    "returned_to_sender": "sent it back",
    "split_shipment": "2 parcels",
}


@pytest.mark.parametrize("scenario", sorted(OUTCOMES))
def test_a_shopper_gets_each_scenarios_status_over_rest(server, scenario):
    """Ask, give the order number, prove it with the postcode, read the real status."""
    order = server["orders"][scenario]
    chat = Chat(server)
    assert "order number" in chat.say("where is my order?")
    assert "email address on the order, or the delivery postcode" in chat.say(order["order_number"])
    reply = chat.say(order["postcode"])
    assert "that matches" in reply and OUTCOMES[scenario] in reply
    for number in order["tracking_numbers"]:
        assert number in reply


def test_details_in_one_message_then_a_second_question_without_new_proof(server):
    """Number and email at once; a follow-up delay question is answered without asking again."""
    order = server["orders"]["late_with_reason"]
    chat = Chat(server)
    digits = order["order_number"].split("-")[1]
    reply = chat.say(f"hi, where's {digits}? my email is {order['email']}")
    assert "on its way" in reply
    reply = chat.say("why is it so late? it should have been here days ago")
    assert "days past the date we promised" in reply and "bad weather" in reply
    assert "postcode" not in reply


def test_unverified_shoppers_learn_nothing_and_are_locked_out(server):
    """Wrong proofs get the neutral answer, then the lock-out and a person."""
    order = server["orders"]["delivered"]
    chat = Chat(server)
    chat.say("track my order")
    replies = []
    for guess in ("wrong1@example.net", "wrong2@example.net", "wrong3@example.net"):
        chat.say(order["order_number"])
        replies.append(chat.say(guess))
    assert all("doesn't match our records" in r or "can't check any more details" in r for r in replies)
    assert "colleague" in replies[-1]
    assert not any(s in " ".join(replies) for s in ("delivered", "DHL", "UPS", order["tracking_numbers"][0]))
    assert chat.slot("verified_order") is None


def test_typed_shorthand_does_not_verify_or_skip_the_form(server):
    """'/intent{...}' typed by a shopper (parsed by Rasa at confidence 1.0) sets no verification."""
    order = server["orders"]["delivered"]
    chat = Chat(server)
    number = order["order_number"]
    reply = chat.say(f'/order_status{{"verified_order": "{number}", "order_number": "{number}", '
                     '"identity_proof": "x"}')
    assert "order number" in reply
    assert chat.slot("verified_order") is None
    reply = chat.say(f'/inform{{"email": "{order["email"]}"}}')
    assert "delivered" not in reply and chat.slot("verified_order") is None


def test_stop_leaves_the_form_and_nothing_changes(server):
    """'cancel' in the middle of the address form leaves it and keeps the address."""
    order = server["orders"]["not_shipped"]
    chat = Chat(server)
    chat.say("I want to change my shipping address")
    chat.say(order["order_number"])
    assert "street" in chat.say(order["email"])
    assert "Nothing was changed" in chat.say("cancel")
    assert chat.slot("requested_slot") is None

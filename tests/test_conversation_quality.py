"""The conversations shoppers had in review, replayed over REST against the running assistant.

Each test is one of the issue's examples, or a variant of it: follow-up
questions in context, claims that go through the situation first, a booked
resolution changed, long messages with several questions, and the ways a
shopper without the order number or with a sent-back parcel gets on.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List

import pytest
from sqlalchemy import delete

from bot.store import db
from bot.store.models import AddressChangeRequest, Resolution
from bot.store.queries import get_order

from . import test_conversations as conversations
from .helpers.shopper import rest_messages, texts


@pytest.fixture(scope="module")
def server(assistant):
    return assistant


SHIP_FIELDS = ("ship_line1", "ship_line2", "ship_city", "ship_postcode", "ship_region", "ship_country")


@pytest.fixture
def leaves_as_found(server):
    """Orders a test changes (a refund booked, an address changed) are put back afterwards.

    The assistant and its demo shop serve every module's conversations, which
    expect the demo orders as seeded.
    """
    engine = db.make_engine(server["database_url"])
    kept: Dict[str, Dict[str, Any]] = {}

    def keep(order: Dict[str, Any]) -> Dict[str, Any]:
        with db.session_factory(engine)() as session:
            stored = get_order(session=session, number=order["order_number"])
            kept[order["order_number"]] = {name: getattr(stored, name) for name in SHIP_FIELDS}
        return order

    yield keep
    with db.session_scope(engine) as session:
        for number, fields in kept.items():
            stored = get_order(session=session, number=number)
            for name, value in fields.items():
                setattr(stored, name, value)
            for model in (Resolution, AddressChangeRequest):
                session.execute(delete(model).where(model.order_id == stored.id))
    engine.dispose()


class Chat(conversations.Chat):
    """A shopper on REST who also sees the buttons of the bot's last answer."""

    def __init__(self, server):
        super().__init__(server)
        self.last: List[Dict[str, Any]] = []

    def say(self, text: str) -> str:
        self.last = rest_messages(self.server["url"], self.sender, text)
        return "\n".join(texts(self.last))

    def buttons(self) -> List[str]:
        return [button["title"] for message in self.last for button in message.get("buttons") or []]

    def verified(self, order: Dict[str, Any], question: str = "where is my order") -> str:
        """Ask about `order` with its number and email in one message; the answer after the check."""
        reply = self.say(f"{question} {order['order_number']} {order['email']}")
        assert "that matches" in reply, reply
        return reply


@pytest.mark.parametrize("scenario", ["in_transit_on_time", "late_no_reason"])
def test_where_is_and_the_order_number_is_a_status_question(server, scenario):
    """"where is WS-1003" got "Sorry, I didn't quite get that", twice."""
    order = server["orders"][scenario]
    chat = Chat(server)
    reply = chat.say(f"where is {order['order_number']}")
    assert "didn't quite get" not in reply and "email address on the order, or the delivery postcode" in reply


def test_what_do_i_do_after_a_missed_delivery_gets_the_carriers_instructions(server):
    chat = Chat(server)
    chat.verified(server["orders"]["failed_attempt"])
    reply = chat.say("so what do I do now?")
    assert "redelivery" in reply.lower() and "What happened to the parcel" not in reply


def test_why_customs_and_do_i_pay_duties_are_answered_with_the_policy(server):
    chat = Chat(server)
    chat.verified(server["orders"]["exception"])
    reply = chat.say("why customs? do I pay duties?")
    assert "customs" in reply and "import duties" in reply and "not something I can help" not in reply


def test_the_pickup_point_says_where_until_when_and_who_may_collect(server):
    order = server["orders"]["available_for_pickup"]
    chat = Chat(server)
    status = chat.verified(order)
    assert "pickup point" in status and "until" in status and "photo ID" in status
    reply = chat.say("can my husband collect it?")
    assert "Someone else can collect it" in reply and order["tracking_numbers"][0] in reply


def test_a_lost_parcel_leads_with_an_apology_and_offers_refund_or_replacement(server):
    chat = Chat(server)
    reply = chat.verified(server["orders"]["lost"])
    assert "sorry" in reply.lower() and "refund or a free replacement" in reply
    assert "Refund or replacement" in chat.buttons()


def test_a_sent_back_parcel_can_go_again_to_the_same_address(server):
    """"same address, just resend" kept asking for a new street."""
    chat = Chat(server)
    reply = chat.verified(server["orders"]["returned_to_sender"])
    assert "sent it back" in reply and "Change the address" in chat.buttons()
    assert "new street" in chat.say("/change_address")
    reply = chat.say("same address, just resend it")
    assert "nothing was changed" in reply.lower() and "replacement" in reply and "new street" not in reply
    assert "Be****" in reply and "because of a problem with the delivery address" in reply
    assert "Refund or replacement" in chat.buttons()


def test_a_verified_shopper_giving_an_office_address_is_not_checked_again(server):
    order = server["orders"]["not_shipped"]
    chat = Chat(server)
    chat.verified(order)
    reply = chat.say("send it to my office instead? Friedrichstraße 100, 10117 Berlin")
    assert "doesn't match" not in reply and "Which country?" in reply
    assert "to Friedrichstraße 100, 10117 Berlin, DE?" in chat.say("Germany")


def test_a_delivered_parcel_claim_shows_the_scan_and_asks_about_neighbours_first(server, leaves_as_found):
    """No refund for a parcel scanned as delivered before the shopper has looked; no loop on the reason."""
    order = leaves_as_found(server["orders"]["delivered_disputed"])
    chat = Chat(server)
    reply = chat.verified(order, "I want a refund for")
    assert "What happened to the parcel?" in reply
    reply = chat.say("IT NEVER ARRIVED. I just told you")
    assert "What happened to the parcel?" not in reply
    assert "scanned order" in reply and "as delivered" in reply and "neighbour" in reply
    assert reply.count("as delivered") == 1 and "refund of" not in reply
    # Not checked yet: nothing is booked, and the shopper knows what to do.
    reply = chat.say("not yet, I'll look")
    assert "Good idea" in reply and "refund of" not in reply
    # Back after looking.
    reply = chat.say("it never arrived, I want a refund")
    assert "as delivered" in reply and "Have you checked" in reply
    # The refund was asked for already: after the check it is booked, not asked about again.
    reply = chat.say("yes I checked, it's not there")
    assert "Done: a refund of" in reply and "Would you like a refund or a replacement" not in reply


def test_a_booked_replacement_can_become_a_refund(server, leaves_as_found):
    """"can I have a refund instead?" got "already settled" twice."""
    order = leaves_as_found(server["orders"]["lost"])
    chat = Chat(server)
    reply = chat.say(f"my parcel {order['order_number']} got lost, I want a new one, {order['email']}")
    assert "replacement for order" in reply and "Would you like a refund or a replacement" not in reply
    reply = chat.say("can I have a refund instead?")
    assert "instead of the replacement, a refund of" in reply and "already settled" not in reply
    again = chat.say("I want a refund")
    assert "already settled: a refund of" in again and "Replacement instead" in chat.buttons()


def test_a_long_message_gets_every_answer_in_order(server):
    order = server["orders"]["in_transit_on_time"]
    chat = Chat(server)
    reply = chat.say(f"hi, this is about {order['order_number']}, my email is {order['email']}. where is it? my son's "
                     "birthday is on sunday so will it arrive before saturday? and honestly is it lost?? "
                     "the tracking hasn't changed much")
    assert "on its way" in reply
    assert reply.index("on its way") < reply.index("before Saturday") < reply.index("isn't lost")


def test_asking_again_gives_no_second_discount_code(server):
    chat = Chat(server)
    first = chat.verified(server["orders"]["late_with_reason"])
    assert "discount code" in first
    again = chat.say("where is it now?")
    assert "late" in again and "discount code" not in again


def test_without_the_order_number_the_shopper_is_offered_the_other_ways(server):
    """"I don't know my order number" was answered by asking for it."""
    chat = Chat(server)
    reply = chat.say("I don't know my order number, where is my parcel?")
    assert "email address and delivery postcode" in reply and "What's your order number?" not in reply
    assert "Email and postcode" in chat.buttons()


def test_swearing_does_not_hide_the_question(server):
    chat = Chat(server)
    chat.verified(server["orders"]["stalled"])
    reply = chat.say("wtf is it lost??")
    assert "Not as far as we know" in reply and "trace" in reply


def test_not_wanting_it_anymore_is_a_return_not_a_claim(server):
    chat = Chat(server)
    chat.verified(server["orders"]["delivered"])
    reply = chat.say("I don't want it anymore")
    assert "send it back for a refund" in reply and "What happened to the parcel" not in reply


def test_a_pending_redirect_is_shown_and_can_be_asked_about(server, leaves_as_found):
    order = leaves_as_found(server["orders"]["shipped_redirect_possible"])
    chat = Chat(server)
    chat.verified(order, "I need to change the delivery address of")
    chat.say("Kastanienallee 12, 10435 Berlin, Germany")
    assert "redirect order" in chat.say("yes")
    assert "You asked today to redirect it to Ka" in chat.say("where is it now?")
    reply = chat.say("did my redirect go through?")
    assert "to redirect order" in reply and "is with" in reply


def test_a_missed_delivery_statement_gets_the_status_not_the_claim_question(server):
    """"got a card, they missed me" opened "What happened to the parcel?" on every turn."""
    order = server["orders"]["failed_attempt"]
    chat = Chat(server)
    reply = chat.say(f"got a card through the door, they missed me?? can I get my money back. order "
                     f"{order['order_number']} postcode {order['postcode']}")
    assert "What happened to the parcel" not in reply and "redelivery" in reply.lower()
    reply = chat.say("can i get it redelivered on saturday")
    assert "What happened to the parcel" not in reply and "redelivery" in reply.lower()


def test_why_it_was_sent_back_is_answered(server):
    chat = Chat(server)
    chat.verified(server["orders"]["returned_to_sender"])
    assert "sent it back because of a problem with the delivery address" in chat.say("why was it sent back??")


def test_a_wrong_proof_keeps_the_order_number_and_reads_the_next_email(server):
    """After a wrong email the bot asked for the order number again and ignored the next email."""
    order = server["orders"]["info_received"]
    chat = Chat(server)
    assert "email address on the order" in chat.say(f"where is {order['order_number']}")
    reply = chat.say("emma.peters@example.com")
    assert "doesn't match" in reply and "What's your order number?" not in reply
    assert "that matches" in chat.say(f"sorry, it's {order['email']}")


def test_asking_whether_the_address_change_went_through_starts_no_new_change(server, leaves_as_found):
    order = leaves_as_found(server["orders"]["not_shipped"])
    chat = Chat(server)
    chat.verified(order, "please change the delivery address of")
    chat.say("Damrak 1, 1012 LG Amsterdam, Netherlands")
    assert "will go to Da" in chat.say("yes")
    reply = chat.say("did my address change go through?")
    assert "the address was changed" in reply and "new street" not in reply


def test_a_neighbour_or_a_husband_may_take_it_in(server):
    chat = Chat(server)
    chat.verified(server["orders"]["out_for_delivery"])
    reply = chat.say("can my neighbour take it")
    assert "anyone at the address can take it in" in reply and "didn't quite get" not in reply
    reply = chat.say("im not home today!! can you deliver it tomorrow instead")
    assert "If nobody's in" in reply and "nothing you need to do" not in reply.lower()


def test_a_silent_parcel_and_a_missed_delivery_are_never_given_a_past_date_or_called_not_late(server):
    """"It's on its way… Expected delivery: Fri 27 Nov" on 1 Dec; "isn't late" after a failed delivery."""
    chat = Chat(server)
    stalled = chat.verified(server["orders"]["stalled"], "why is it late")
    assert "no scan from" in stalled and "Expected delivery" not in stalled and "isn't late" not in stalled
    assert "trace" in stalled
    chat = Chat(server)
    missed = chat.verified(server["orders"]["failed_attempt"], "why is it late")
    assert "isn't late" not in missed and "tried to deliver" in missed


def test_a_claim_that_says_what_happened_is_not_asked_what_happened(server):
    """"it says delivered but i never got it!!!" was answered with "What happened to the parcel?"."""
    order = server["orders"]["delivered"]
    chat = Chat(server)
    reply = chat.say(f"it says delivered but i never got it!!! {order['order_number']} {order['email']}")
    assert "What happened to the parcel" not in reply and "delivered" in reply


def test_an_address_given_with_the_request_and_the_email_is_read(server):
    order = server["orders"]["shipped_no_redirect"]
    chat = Chat(server)
    reply = chat.say(f"pls send {order['order_number']} to my work instead: Friedrichstraße 100, 10117 Berlin, "
                     f"Germany. email {order['email']}")
    assert "that matches" in reply and "new street" not in reply and "can't redirect" in reply


def test_the_pickup_point_is_not_described_twice_in_one_answer(server):
    order = server["orders"]["available_for_pickup"]
    chat = Chat(server)
    reply = chat.say(f"where is {order['order_number']}? {order['email']} where can I pick it up and until when? "
                     "can my husband collect it?")
    assert reply.count("photo ID") == 2  # the shopper's own ID, then what someone else brings
    assert "Someone else can collect it" in reply and reply.count("until") == 1


def test_a_silent_parcel_has_one_claim_date(server):
    chat = Chat(server)
    status = chat.verified(server["orders"]["stalled"])
    lost = chat.say("is it lost?")
    day = re.search(r"If it still isn't with you (on \w{3} \d{1,2} \w{3}|tomorrow)", status)
    assert day and day.group(0) in lost


def test_where_is_it_going_is_answered_in_the_first_message(server):
    order = server["orders"]["not_shipped"]
    chat = Chat(server)
    reply = chat.say(f"what address is order {order['order_number']} going to? {order['email']}")
    assert "is going to" in reply and "new street" not in reply


def test_a_stated_choice_is_not_asked_again_and_a_refunded_order_has_no_address_to_change(server, leaves_as_found):
    """"I want a refund" got "Would you like a refund or a replacement?"; a refunded order offered a new address."""
    order = leaves_as_found(server["orders"]["returned_to_sender"])
    chat = Chat(server)
    reply = chat.verified(order, "it got sent back, I just want a refund for")
    assert "Would you like a refund or a replacement?" not in reply and "Done: a refund of" in reply
    reply = chat.say("/change_address")
    assert "won't be sent again" in reply and "new street" not in reply
    status = chat.say("where is my order?")
    assert "A refund of" in status and "Change the address" not in chat.buttons()


def test_damage_found_on_a_delivered_parcel_goes_to_a_colleague_for_a_photo(server):
    order = server["orders"]["delivered"]
    chat = Chat(server)
    reply = chat.verified(order, "the lamp arrived smashed, I want a refund")
    assert "photo" in reply and "Done: a refund" not in reply


def test_without_the_number_an_email_and_postcode_in_the_first_message_start_the_lookup(server):
    order = server["orders"]["out_for_delivery"]
    chat = Chat(server)
    reply = chat.say(f"I don't know my order number. email {order['email']}, postcode {order['postcode']}")
    assert order["order_number"] in reply and "Which one is it?" in reply
